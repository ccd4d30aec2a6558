vcl 4.1;
# readscale's edge: Varnish 7.1 in front of an application that speaks readscale's
# HTTP policy. The stack fills in the placeholders in double braces before compiling.
#
# What it does, and why:
# - Caches only what the origin marks shareable. CDN-Cache-Control (RFC 9213) targets
#   this edge and governs over Cache-Control (a page may tell browsers `no-cache` and
#   the edge `max-age=300`); `private` in Cache-Control, Set-Cookie and `Vary: *` still
#   refuse. s-maxage is honoured natively. A response without any caching field is not
#   cached (no heuristic 120 s TTL).
# - Requests carrying Cookie or Authorization pass (builtin vcl_recv), so a personalised
#   response is never stored or served from the shared cache.
# - stale-while-revalidate becomes grace (native for Cache-Control; parsed here for
#   CDN-Cache-Control): one background fetch refreshes the object while everybody else
#   gets the stale copy. Concurrent misses are coalesced (native).
# - stale-if-error: the object's grace covers its stale-if-error window too. A request
#   for a copy past its stale-while-revalidate window refetches (restart with no grace);
#   if that fetch fails or answers 5xx, the request restarts once more and is served
#   the stale copy. With a health probe configured, a sick backend skips the refetch.
#   A failed background refresh never replaces the stale object (abandon).
# - PURGE (a URL) and xkey tag purges (hard and soft) are accepted only from loopback.
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
    "127.0.0.0"/8;
    "::1";
}

sub vcl_recv {
    if (req.restarts == 0) {
        # Internal markers are never accepted from a client.
        unset req.http.X-RS-Refetch;
        unset req.http.X-RS-SIE;
        unset req.http.X-RS-State;
        unset req.http.X-RS-TTL;
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
    set req.http.X-RS-State = "MISS";
}

sub vcl_pass {
    set req.http.X-RS-State = "PASS";
}

sub vcl_backend_fetch {
    # Tell the origin when a fetch is a background refresh (grace), not a client's
    # request: it can count it apart (the demo's funnel does).
    if (bereq.is_bgfetch) {
        set bereq.http.X-Readscale-Bgfetch = "1";
    } else {
        unset bereq.http.X-Readscale-Bgfetch;
    }
}

sub vcl_backend_response {
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

    set beresp.http.X-RS-SWR = "0";
    if (beresp.http.Cache-Control ~ "(?i)stale-while-revalidate=\d+") {
        set beresp.http.X-RS-SWR = regsub(beresp.http.Cache-Control, "^.*(?i)stale-while-revalidate=(\d+).*$", "\1");
    }
    set beresp.http.X-RS-SIE = "0";
    if (beresp.http.Cache-Control ~ "(?i)stale-if-error=\d+") {
        set beresp.http.X-RS-SIE = regsub(beresp.http.Cache-Control, "^.*(?i)stale-if-error=(\d+).*$", "\1");
    }

    if (beresp.http.CDN-Cache-Control) {
        # RFC 9213: the field targeted at this edge governs; Cache-Control is for others.
        if (beresp.http.CDN-Cache-Control ~ "(?i)(^|[ ,])(private|no-store|no-cache)([ ,=]|$)") {
            call vcl_beresp_hitmiss;
        }
        if (beresp.http.CDN-Cache-Control ~ "(?i)(^|[ ,])max-age=\d+") {
            set beresp.ttl = std.duration(
                regsub(beresp.http.CDN-Cache-Control, "^(.*[ ,])?(?i)max-age=(\d+).*$", "\2") + "s", 0s);
        }
        set beresp.http.X-RS-SWR = "0";
        if (beresp.http.CDN-Cache-Control ~ "(?i)stale-while-revalidate=\d+") {
            set beresp.http.X-RS-SWR = regsub(beresp.http.CDN-Cache-Control, "^.*(?i)stale-while-revalidate=(\d+).*$", "\1");
        }
        set beresp.http.X-RS-SIE = "0";
        if (beresp.http.CDN-Cache-Control ~ "(?i)stale-if-error=\d+") {
            set beresp.http.X-RS-SIE = regsub(beresp.http.CDN-Cache-Control, "^.*(?i)stale-if-error=(\d+).*$", "\1");
        }
        # Defence in depth: a private response is never shared, whatever the edge field says.
        if (beresp.http.Cache-Control ~ "(?i)(^|[ ,])private([ ,=]|$)") {
            call vcl_beresp_hitmiss;
        }
    } elsif (!beresp.http.Cache-Control && !beresp.http.Expires) {
        # No heuristic freshness at a shared cache: the origin must opt in.
        set beresp.ttl = 0s;
    }

    # Grace covers both stale windows; vcl_hit narrows it to SWR while the backend answers.
    if (std.integer(beresp.http.X-RS-SIE, 0) > std.integer(beresp.http.X-RS-SWR, 0)) {
        set beresp.grace = std.duration(beresp.http.X-RS-SIE + "s", 0s);
    } else {
        set beresp.grace = std.duration(beresp.http.X-RS-SWR + "s", 0s);
    }

    if (beresp.http.CDN-Cache-Control) {
        # The builtin rules minus vcl_beresp_control, which would obey Cache-Control.
        call vcl_beresp_stale;
        call vcl_beresp_cookie;
        call vcl_beresp_vary;
        return (deliver);
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

sub vcl_deliver {
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
    } else {
        set resp.http.Cache-Status = "readscale-edge; fwd=uri-miss; stored";
    }
    # Internal fields never leave the edge (P16).
    unset resp.http.xkey;
    unset resp.http.X-RS-SWR;
    unset resp.http.X-RS-SIE;
    unset resp.http.Via;
    unset resp.http.X-Varnish;
}
