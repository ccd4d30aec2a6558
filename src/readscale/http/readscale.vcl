vcl 4.1;
# readscale's edge: Varnish 7.1 in front of an application that speaks readscale's
# HTTP policy. The stack fills in the placeholders in double braces before compiling.
#
# What it does, and why (RFC 9111 unless named; docs/edge.md has the conformance counts):
# - Stores only what the origin marks shareable, with explicit freshness. No default TTL and
#   no heuristic freshness: a response without max-age, s-maxage or a valid future Expires
#   is never reused without asking the origin (an invalid Expires such as `0` means already
#   expired, §5.3). Set-Cookie, `private`, `no-store` and `Vary: *` refuse storage; only
#   statuses the edge understands are stored (never 5xx: cache-poisoned denial of service).
# - CDN-Cache-Control (RFC 9213) targets this edge and governs over Cache-Control (a page may
#   tell browsers `no-cache` and the edge `max-age=300`). Only a valid Structured Fields
#   Dictionary (RFC 8941) with an Integer max-age governs; anything else is ignored and
#   Cache-Control governs, `no-store` and `private` included (RFC 9213 §2.1).
#   `private` in Cache-Control still refuses, whatever the edge field says.
# - Age counts (§4.2.3): a max-age of 3600 with `Age: 7200` is already stale. The first
#   member of a list-valued Age is used; an invalid one makes the response stale (§5.1).
# - Expired objects with a validator (ETag, Last-Modified) are kept (beresp.keep) and
#   revalidated: the refetch carries If-None-Match / If-Modified-Since, and a 304 refreshes
#   the stored copy. A response stale on arrival (`no-cache`, `max-age=0`) is not stored.
# - Requests carrying Authorization pass (builtin vcl_recv). A request carrying cookies is
#   answered from a stored response when Vary allows it (a page that depends on a cookie
#   says so with Vary: Cookie, and readscale's middleware sends every identity-dependent
#   page private), but never fills the cache: on a miss it passes, so nothing fetched with
#   someone's cookies is ever stored, even from a route that wrongly claims `public`.
#   Anonymous readers with analytics or preference cookies get the edge; a session
#   holding a causal token (readscale_token) passes, to read its own writes.
# - Unsafe and unknown methods pass to the origin (never pipe); a non-error answer
#   invalidates every stored response for that URL, and for its same-origin Location and
#   Content-Location (§4.4), through an xkey secondary key (the X-HashTwo field is
#   reserved for it).
# - stale-while-revalidate becomes grace: one background fetch refreshes the object while
#   everybody else gets the stale copy. Concurrent misses are coalesced (native).
# - stale-if-error: the object's grace covers its stale-if-error window too. A request
#   for a copy past its stale-while-revalidate window refetches (restart with no grace);
#   if that fetch fails or answers 5xx, the request restarts once more and is served
#   the stale copy. With a health probe configured, a sick backend skips the refetch.
#   A failed background refresh never replaces the stale object (abandon).
#   must-revalidate (and proxy-revalidate) forbid both stale windows.
# - PURGE (a URL), xkey tag purges (hard and soft) and a ban of everything (the header
#   readscale-ban-all, what a purger replays to a node whose backlog of missed purges
#   overflowed) are accepted only from the purge ACL: loopback unless render_vcl is
#   given other addresses or networks.
# - With render_vcl's max_life, no object is served more than max_life seconds after this
#   node stored it (TTL and both stale windows together): the bound on what a node that
#   missed purges can serve, whatever happened to the purges (docs/edge.md).
# - Forwarding fields a client could use to poison the cache are dropped.
# - X-Cache and Cache-Status (RFC 9211) tell a client what the edge did.

import std;
import xkey;

backend default {
    .host = "{{BACKEND_HOST}}";
    .port = "{{BACKEND_PORT}}";
    .connect_timeout = 1s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
{{PROBE}}
}

acl purgers {
{{PURGE_ACL}}
}

sub vcl_recv {
    if (req.restarts == 0) {
        # Internal markers are never accepted from a client.
        unset req.http.X-RS-Refetch;
        unset req.http.X-RS-SIE;
        unset req.http.X-RS-State;
        unset req.http.X-RS-TTL;
        unset req.http.X-RS-Keys;
        unset req.http.X-RS-Loc;
        unset req.http.X-RS-Cookie;
        # Unkeyed inputs an origin might reflect into a cached page (cache poisoning).
        unset req.http.X-Forwarded-Host;
        unset req.http.X-Forwarded-Server;
        unset req.http.X-Forwarded-Scheme;
        unset req.http.X-Forwarded-Port;
        unset req.http.X-Forwarded-Prefix;
        unset req.http.X-Original-URL;
        unset req.http.X-Rewrite-URL;
        unset req.http.X-HTTP-Method-Override;
        unset req.http.X-HTTP-Method;
        unset req.http.X-Method-Override;
        unset req.http.X-Host;
        unset req.http.Forwarded;
        set req.http.X-Forwarded-Proto = "http";
    }
    if (req.http.X-RS-Refetch) {
        set req.grace = 0s;
    } elsif (req.http.X-RS-SIE) {
        set req.grace = 3650d;  # req.grace survives a restart: give the object its whole grace back
    }

    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Purge not allowed from " + client.ip));
        }
        if (req.http.readscale-ban-all) {
            # Everything this node holds: a replayed backlog that overflowed.
            if (std.ban("obj.status != 0")) {
                return (synth(200, "Banned all"));
            }
            return (synth(500, "Ban failed: " + std.ban_error()));
        }
        if (req.http.xkey-purge) {
            set req.http.n-gone = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged " + req.http.n-gone));
        }
        if (req.http.xkey-softpurge) {
            set req.http.n-gone = xkey.softpurge(req.http.xkey-softpurge);
            return (synth(200, "Soft-purged " + req.http.n-gone));
        }
        return (purge);
    }

    if (req.method != "GET" && req.method != "HEAD" && req.method != "PRI" && req.method != "CONNECT") {
        # Unsafe and unknown methods go to the origin (the builtin would pipe unknown ones,
        # out of sight of vcl_deliver, which invalidates after a success).
        call vcl_req_host;
        return (pass);
    }
}

sub vcl_req_cookie {
    # Runs in place of the builtin's (which passes every request with a Cookie).
    if (req.http.Cookie) {
        if (req.http.Cookie ~ "(^|;)[ \t]*readscale_token=") {
            # A session that wrote: the origin routes its reads by its token.
            return (pass);
        }
        set req.http.X-RS-Cookie = "1";
        return (hash);
    }
}

sub vcl_hash {
    # Host is part of the key (builtin); nothing else the client controls is.
}

sub vcl_hit {
    set req.http.X-RS-TTL = std.integer(duration=obj.ttl, fallback=0);
    if (obj.ttl > 0s) {
        set req.http.X-RS-State = "HIT";
        return (deliver);
    }
    if (req.http.X-RS-SIE) {
        # The refetch failed: stale-if-error.
        set req.http.X-RS-State = "HIT-STALE-IF-ERROR";
        return (deliver);
    }
    if (obj.ttl + std.duration(obj.http.X-RS-SWR + "s", 0s) <= 0s) {
        # Past stale-while-revalidate: only stale-if-error may serve this copy.
        if (!std.healthy(req.backend_hint)) {
            set req.http.X-RS-State = "HIT-STALE-IF-ERROR";
            return (deliver);
        }
        set req.http.X-RS-Refetch = "1";
        return (restart);
    }
    set req.http.X-RS-State = "HIT-STALE";
}

sub vcl_miss {
    if (req.http.X-RS-Cookie) {
        # A request with cookies never fills the cache: the origin answers it alone.
        return (pass);
    }
    set req.http.X-RS-State = "MISS";
}

sub vcl_pass {
    set req.http.X-RS-State = "PASS";
}

sub vcl_backend_fetch {
    # Tell the origin when a fetch is a background refresh (grace), not a client's
    # request: it can count it apart (the demo's funnel does).
    unset bereq.http.X-RS-Cookie;
    if (bereq.is_bgfetch) {
        set bereq.http.X-Readscale-Bgfetch = "1";
        # A background refresh is for every reader of the stored page, not for the one
        # whose request triggered it: it goes without that reader's cookies.
        unset bereq.http.Cookie;
    } else {
        unset bereq.http.X-Readscale-Bgfetch;
    }
}

sub vcl_backend_response {
    # Fields this VCL uses internally are never taken from the origin.
    unset beresp.http.X-RS-SWR;
    unset beresp.http.X-RS-SIE;
    unset beresp.http.X-RS-Target;
    unset beresp.http.X-RS-CC;
    unset beresp.http.X-RS-Stale;
    unset beresp.http.X-RS-Revalidated;
    unset beresp.http.X-HashTwo;

    if (bereq.uncacheable) {
        # A pass: nothing is stored.
        return (deliver);
    }
    if (beresp.status >= 500) {
        if (bereq.is_bgfetch || bereq.http.X-RS-Refetch) {
            # Keep serving the stale object rather than an error (stale-if-error).
            return (abandon);
        }
        # Never store an error page (CPDoS).
        set beresp.ttl = 0s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    if (beresp.status != 200 && beresp.status != 203 && beresp.status != 204 &&
        beresp.status != 300 && beresp.status != 301 && beresp.status != 302 &&
        beresp.status != 307 && beresp.status != 308 && beresp.status != 404 &&
        beresp.status != 405 && beresp.status != 410 && beresp.status != 414) {
        # Statuses the edge stores; the rest (and every 5xx above) go through unstored.
        call vcl_beresp_hitmiss;
    }

    # Age (§5.1): the first member of the first line; anything but a non-negative integer
    # makes the response stale. Varnish already moved the object's origin time by it.
    if (beresp.http.Age && beresp.http.Age !~ "^[ \t]*[0-9]+[ \t]*(,|$)") {
        set beresp.http.X-RS-Stale = "1";
    }

    std.collect(beresp.http.CDN-Cache-Control);
    if (beresp.http.CDN-Cache-Control) {
        call rs_parse_targeted;
    }
    if (beresp.http.X-RS-Target) {
        call rs_freshness_targeted;
    } else {
        call rs_freshness_cache_control;
    }

    if (beresp.http.X-RS-Stale) {
        set beresp.ttl = 0s;
    }
    if (beresp.http.Set-Cookie) {
        call vcl_beresp_hitmiss;
    }
    std.collect(beresp.http.Vary);
    if (beresp.http.Vary ~ "(^|,)[ \t]*\*[ \t]*(,|$)") {
        # Vary: * (in any member, on any line): no later request can match it.
        call vcl_beresp_hitmiss;
    }

    # Grace covers both stale windows; vcl_hit narrows it to SWR while the backend answers.
    if (std.integer(beresp.http.X-RS-SIE, 0) > std.integer(beresp.http.X-RS-SWR, 0)) {
        set beresp.grace = std.duration(beresp.http.X-RS-SIE + "s", 0s);
    } else {
        set beresp.grace = std.duration(beresp.http.X-RS-SWR + "s", 0s);
    }
    if (beresp.ttl <= 0s) {
        # Stale on arrival (no-cache, max-age=0, too old): every request goes to the origin,
        # in parallel (hit-for-miss). Varnish never revalidates an object stored with no
        # TTL, and a tiny TTL would serialise the waiting list behind each fetch.
        call vcl_beresp_hitmiss;
    }
{{MAX_LIFE}}
    if (beresp.http.ETag || beresp.http.Last-Modified) {
        # Kept past expiry so the next fetch is conditional (a 304 refreshes the copy).
        set beresp.keep = 1h;
    } else {
        set beresp.keep = 0s;
    }
    if (beresp.was_304) {
        set beresp.http.X-RS-Revalidated = "1";
    }
    # The secondary key a successful unsafe request for this URL purges (vcl_deliver).
    set beresp.http.X-HashTwo = "rs-url:" + std.tolower(bereq.http.host) +
        regsuball(regsuball(regsuball(bereq.url, "%", "%25"), ",", "%2C"), "\s", "%20");
    unset beresp.http.X-RS-Target;
    unset beresp.http.X-RS-Stale;
    # Never the builtin rules: they would obey Cache-Control over CDN-Cache-Control.
    return (deliver);
}

sub rs_parse_targeted {
    # CDN-Cache-Control is a Dictionary (RFC 8941 §3.2). Strings are replaced by "" first,
    # so that nothing quoted can pass for a directive; then the whole field must parse.
    set beresp.http.X-RS-Target = regsuball(beresp.http.CDN-Cache-Control, {""(?:[ !#-\[\]-~]|\\["\\])*""}, {""""});
    if (beresp.http.X-RS-Target !~ {"^(?(DEFINE)(?<k>[a-z*][a-z0-9_.*-]*)(?<b>-?[0-9]{1,15}(?:\.[0-9]{1,3})?|""|[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*|:[A-Za-z0-9+/=]*:|\?[01])(?<p>(?:;[ ]*(?&k)(?:=(?&b))?)*)(?<i>(?&b)(?&p))(?<m>(?&k)(?:=(?:\([ ]*(?:(?&i)(?:[ ]+(?&i))*)?[ ]*\)(?&p)|(?&i))|(?&p))))[ \t]*(?&m)(?:[ \t]*,[ \t]*(?&m))*[ \t]*$"}) {
        # Not a Dictionary (or empty): ignored, Cache-Control governs (RFC 9213 §2.1).
        unset beresp.http.X-RS-Target;
        return;
    }
    # Members between commas, so ",name" anchors a directive: ",max-age=60,private,".
    set beresp.http.X-RS-Target = "," + regsuball(regsuball(beresp.http.X-RS-Target, "^[ \t]+|[ \t]+$", ""), "[ \t]*,[ \t]*", ",") + ",";
    if (beresp.http.X-RS-Target ~ ",max-age[=;,]" &&
        regsub(beresp.http.X-RS-Target, "^.*,max-age(=[^,;]*)?(;[^,]*)?,.*$", "\1") !~ "^=[0-9]+$") {
        # The last max-age (a Dictionary's last duplicate wins) must be an Integer.
        unset beresp.http.X-RS-Target;
    }
}

sub rs_freshness_targeted {
    # A Boolean directive is on unless its value is ?0.
    if (beresp.http.X-RS-Target ~ ",(private|no-store)(?!=\?0[;,])[=;,]") {
        call vcl_beresp_hitmiss;
    }
    if (beresp.http.Cache-Control ~ "(?i)(^|[ ,])private([ ,=]|$)") {
        # Defence in depth: a private response is never shared, whatever the edge field says.
        call vcl_beresp_hitmiss;
    }
    if (beresp.http.X-RS-Target ~ ",max-age=") {
        # beresp.ttl is counted from now: take off the age the response already has.
        set beresp.ttl = std.duration(regsub(beresp.http.X-RS-Target, "^.*,max-age=([0-9]+)[;,].*$", "\1") + "s", 0s) - beresp.age;
    } else {
        set beresp.ttl = 0s;
    }
    if (beresp.http.X-RS-Target ~ ",no-cache(?!=\?0[;,])[=;,]") {
        set beresp.ttl = 0s;  # never reused without asking the origin
    }
    set beresp.http.X-RS-SWR = "0";
    if (beresp.http.X-RS-Target ~ ",stale-while-revalidate=[0-9]+[;,]") {
        set beresp.http.X-RS-SWR = regsub(beresp.http.X-RS-Target, "^.*,stale-while-revalidate=([0-9]+)[;,].*$", "\1");
    }
    set beresp.http.X-RS-SIE = "0";
    if (beresp.http.X-RS-Target ~ ",stale-if-error=[0-9]+[;,]") {
        set beresp.http.X-RS-SIE = regsub(beresp.http.X-RS-Target, "^.*,stale-if-error=([0-9]+)[;,].*$", "\1");
    }
    if (beresp.http.X-RS-Target ~ ",must-revalidate(?!=\?0[;,])[=;,]") {
        set beresp.http.X-RS-SWR = "0";
        set beresp.http.X-RS-SIE = "0";
    }
}

sub rs_freshness_cache_control {
    # As the builtin: a hint of no-store or private anywhere refuses (conservative).
    if (beresp.http.Cache-Control ~ "(?i)(no-store|private)" || beresp.http.Surrogate-Control ~ "(?i)no-store") {
        call vcl_beresp_hitmiss;
    }
    if (beresp.http.Cache-Control ~ {"(?i)(^|[ ,])(s-maxage|max-age)="[0-9]+"([ ,]|$)"}) {
        # The quoted form (max-age="60"), which recipients should accept (§5.2) and Varnish
        # does not: unquote it, drop every other quoted string, then s-maxage first.
        set beresp.http.X-RS-CC = regsuball(beresp.http.Cache-Control, {"(?i)((^|[ ,])(s-maxage|max-age)=)"([0-9]+)""}, "\1\4");
        set beresp.http.X-RS-CC = regsuball(beresp.http.X-RS-CC, {""(?:[^"\\]|\\.)*""}, {""""});
        if (beresp.http.X-RS-CC ~ "(?i)(^|[ ,])s-maxage=[0-9]+([ ,]|$)") {
            set beresp.ttl = std.duration(regsub(beresp.http.X-RS-CC, "(?i)^(|.*?[ ,])s-maxage=([0-9]+)([ ,].*)?$", "\2") + "s", 0s) - beresp.age;
        } elsif (beresp.http.X-RS-CC ~ "(?i)(^|[ ,])max-age=[0-9]+([ ,]|$)") {
            set beresp.ttl = std.duration(regsub(beresp.http.X-RS-CC, "(?i)^(|.*?[ ,])max-age=([0-9]+)([ ,].*)?$", "\2") + "s", 0s) - beresp.age;
        } else {
            set beresp.ttl = 0s;
        }
        unset beresp.http.X-RS-CC;
    } elsif (beresp.http.Cache-Control ~ "(?i)(^|[ ,])(s-maxage|max-age)[ ]*=") {
        # Varnish computed beresp.ttl from it (s-maxage first), counting Age.
    } elsif (beresp.http.Expires &&
             std.time(beresp.http.Expires, std.real2time(0.0, now)) > std.time(beresp.http.Date, now)) {
        # Freshness lifetime is Expires - Date (§4.2.1), less the age the response has.
        set beresp.ttl = std.time(beresp.http.Expires, now) - std.time(beresp.http.Date, now) - beresp.age;
    } else {
        # No explicit freshness, or an invalid or past Expires (§5.3): no heuristic TTL.
        set beresp.ttl = 0s;
    }
    if (beresp.http.Cache-Control ~ "(?i)no-cache") {
        set beresp.ttl = 0s;  # never reused without asking the origin
    }
    set beresp.http.X-RS-SWR = "0";
    if (beresp.http.Cache-Control ~ "(?i)stale-while-revalidate=\d+") {
        set beresp.http.X-RS-SWR = regsub(beresp.http.Cache-Control, "^.*(?i)stale-while-revalidate=(\d+).*$", "\1");
    }
    set beresp.http.X-RS-SIE = "0";
    if (beresp.http.Cache-Control ~ "(?i)stale-if-error=\d+") {
        set beresp.http.X-RS-SIE = regsub(beresp.http.Cache-Control, "^.*(?i)stale-if-error=(\d+).*$", "\1");
    }
    if (beresp.http.Cache-Control ~ "(?i)(must|proxy)-revalidate") {
        set beresp.http.X-RS-SWR = "0";
        set beresp.http.X-RS-SIE = "0";
    }
}

sub vcl_backend_error {
    if (bereq.is_bgfetch || bereq.http.X-RS-Refetch) {
        # A failed refresh keeps the stale object (and vcl_synth serves it to the client).
        return (abandon);
    }
}

sub vcl_synth {
    if (resp.status == 503 && req.http.X-RS-Refetch && req.restarts < 3) {
        # The refetch of a copy past stale-while-revalidate failed: serve it stale.
        unset req.http.X-RS-Refetch;
        set req.http.X-RS-SIE = "1";
        return (restart);
    }
}

sub rs_location_key {
    # req.http.X-RS-Loc (a Location or Content-Location) -> one more key in X-RS-Keys,
    # when it names this origin (§4.4: never another host's responses).
    if (req.http.X-RS-Loc ~ "(?i)^https?://") {
        if (std.tolower(regsub(req.http.X-RS-Loc, "^[^:]*://([^/?#]*).*$", "\1")) == std.tolower(req.http.host)) {
            set req.http.X-RS-Loc = regsub(req.http.X-RS-Loc, "^[^:]*://[^/?#]*", "");
            if (req.http.X-RS-Loc !~ "^/") {
                set req.http.X-RS-Loc = "/" + req.http.X-RS-Loc;
            }
        } else {
            unset req.http.X-RS-Loc;
        unset req.http.X-RS-Cookie;
        }
    } elsif (req.http.X-RS-Loc ~ "^//" || req.http.X-RS-Loc ~ "^[A-Za-z][A-Za-z0-9+.-]*:") {
        unset req.http.X-RS-Loc;  # another authority or scheme
    } elsif (req.http.X-RS-Loc && req.http.X-RS-Loc !~ "^/") {
        # A relative path, resolved against the request's path.
        set req.http.X-RS-Loc = regsub(req.url, "^([^?#]*/)[^/]*$", "\1") + req.http.X-RS-Loc;
    }
    if (req.http.X-RS-Loc) {
        set req.http.X-RS-Keys = req.http.X-RS-Keys + " rs-url:" + std.tolower(req.http.host) +
            regsuball(regsuball(regsuball(regsub(req.http.X-RS-Loc, "#.*$", ""), "%", "%25"), ",", "%2C"), "\s", "%20");
    }
    unset req.http.X-RS-Loc;
}

sub rs_invalidate {
    # §4.4: a non-error answer to an unsafe method invalidates the stored responses for
    # the target URI and for same-origin Location and Content-Location.
    set req.http.X-RS-Keys = "rs-url:" + std.tolower(req.http.host) +
        regsuball(regsuball(regsuball(req.url, "%", "%25"), ",", "%2C"), "\s", "%20");
    set req.http.X-RS-Loc = resp.http.Location;
    call rs_location_key;
    set req.http.X-RS-Loc = resp.http.Content-Location;
    call rs_location_key;
    set req.http.X-RS-Gone = xkey.purge(req.http.X-RS-Keys);
    unset req.http.X-RS-Keys;
}

sub vcl_deliver {
    if (req.method != "GET" && req.method != "HEAD" && req.method != "OPTIONS" && req.method != "TRACE" &&
        resp.status < 400) {
        call rs_invalidate;
    }
    if (!req.http.X-RS-State) {
        set req.http.X-RS-State = "MISS";
    }
    if (obj.uncacheable && req.http.X-RS-State == "MISS") {
        set req.http.X-RS-State = "MISS-UNCACHEABLE";
    }
    set resp.http.X-Cache = req.http.X-RS-State;
    if (req.http.X-RS-State == "HIT") {
        set resp.http.Cache-Status = "readscale-edge; hit; ttl=" + req.http.X-RS-TTL;
    } elsif (req.http.X-RS-State == "HIT-STALE") {
        set resp.http.Cache-Status = "readscale-edge; hit; ttl=" + req.http.X-RS-TTL + "; detail=stale-while-revalidate";
    } elsif (req.http.X-RS-State == "HIT-STALE-IF-ERROR") {
        set resp.http.Cache-Status = "readscale-edge; hit; ttl=" + req.http.X-RS-TTL + "; detail=stale-if-error";
    } elsif (req.http.X-RS-State == "PASS") {
        set resp.http.Cache-Status = "readscale-edge; fwd=bypass";
    } elsif (obj.uncacheable) {
        set resp.http.Cache-Status = "readscale-edge; fwd=uri-miss";
    } elsif (resp.http.X-RS-Revalidated) {
        # The stored copy was revalidated: the origin answered 304 to a conditional fetch.
        set resp.http.Cache-Status = "readscale-edge; fwd=stale; fwd-status=304; stored";
    } else {
        set resp.http.Cache-Status = "readscale-edge; fwd=uri-miss; stored";
    }
    # Internal fields never leave the edge (P16).
    unset resp.http.xkey;
    unset resp.http.X-HashTwo;
    unset resp.http.X-RS-SWR;
    unset resp.http.X-RS-SIE;
    unset resp.http.X-RS-Target;
    unset resp.http.X-RS-CC;
    unset resp.http.X-RS-Stale;
    unset resp.http.X-RS-Revalidated;
    unset resp.http.Via;
    unset resp.http.X-Varnish;
}
