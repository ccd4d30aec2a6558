vcl 4.1;
# readscale's edge: Varnish 7.1 in front of an application that speaks readscale's
# HTTP policy. The stack fills in the placeholders in double braces before compiling.
#
# What it does, and why:
# - Caches only what the origin marks shareable. CDN-Cache-Control (RFC 9213) targets
#   this edge and wins over Cache-Control; s-maxage is honoured natively. A response
#   without any caching header is not cached (no heuristic 120 s TTL), and the builtin
#   rules still refuse Set-Cookie, private, no-store and Vary: *.
# - Requests carrying Cookie or Authorization pass (builtin vcl_recv), so a personalised
#   response is never stored or served from the shared cache.
# - stale-while-revalidate becomes grace (Varnish 7.1 does this natively for
#   Cache-Control; CDN-Cache-Control is parsed here): one background fetch refreshes the
#   object while everybody else gets the stale copy. Concurrent misses are coalesced.
# - stale-if-error: the object's grace covers its stale-if-error window too; while the
#   backend's health probe passes, a copy past its stale-while-revalidate window is
#   refetched (restart with no grace), so the extra window is used only when the backend
#   is sick.
# - PURGE (a URL), and xkey tag purges (hard and soft) are accepted only from loopback.
# - Forwarding headers a client could use to poison the cache are dropped.
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
    # Unkeyed inputs an origin might reflect into a cached page (cache poisoning).
    unset req.http.X-Forwarded-Host;
    unset req.http.X-Forwarded-Server;
    unset req.http.X-Forwarded-Scheme;
    unset req.http.X-Original-URL;
    unset req.http.X-Rewrite-URL;
    unset req.http.X-HTTP-Method-Override;
    unset req.http.X-Host;
    set req.http.X-Forwarded-Proto = "http";

    if (req.restarts == 0) {
        unset req.http.X-RS-Refetch;
        unset req.http.X-RS-State;
    }
    if (req.http.X-RS-Refetch) {
        set req.grace = 0s;
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
    if (obj.ttl <= 0s && std.healthy(req.backend_hint)
        && obj.ttl + std.duration(obj.http.X-RS-SWR + "s", 0s) <= 0s) {
        # Past stale-while-revalidate: only stale-if-error may serve this copy, and the
        # backend is healthy, so fetch a fresh one instead.
        set req.http.X-RS-Refetch = "1";
        return (restart);
    }
    if (obj.ttl <= 0s) {
        set req.http.X-RS-State = "HIT-STALE";
    } else {
        set req.http.X-RS-State = "HIT";
    }
}

sub vcl_miss {
    set req.http.X-RS-State = "MISS";
}

sub vcl_pass {
    set req.http.X-RS-State = "PASS";
}

sub vcl_backend_response {
    set beresp.http.X-RS-SWR = "0";
    if (beresp.http.Cache-Control ~ "stale-while-revalidate=\d+") {
        set beresp.http.X-RS-SWR = regsub(beresp.http.Cache-Control, "^.*stale-while-revalidate=(\d+).*$", "\1");
    }
    set beresp.http.X-RS-SIE = "0";
    if (beresp.http.Cache-Control ~ "stale-if-error=\d+") {
        set beresp.http.X-RS-SIE = regsub(beresp.http.Cache-Control, "^.*stale-if-error=(\d+).*$", "\1");
    }

    if (beresp.http.CDN-Cache-Control) {
        if (beresp.http.CDN-Cache-Control ~ "(^|[ ,])(private|no-store|no-cache)([ ,=]|$)") {
            set beresp.ttl = 0s;
        } elsif (beresp.http.CDN-Cache-Control ~ "(^|[ ,])max-age=\d+") {
            set beresp.ttl = std.duration(regsub(beresp.http.CDN-Cache-Control, "^(.*[ ,])?max-age=(\d+).*$", "\2") + "s", 0s);
        }
        if (beresp.http.CDN-Cache-Control ~ "stale-while-revalidate=\d+") {
            set beresp.http.X-RS-SWR = regsub(beresp.http.CDN-Cache-Control, "^.*stale-while-revalidate=(\d+).*$", "\1");
        }
        if (beresp.http.CDN-Cache-Control ~ "stale-if-error=\d+") {
            set beresp.http.X-RS-SIE = regsub(beresp.http.CDN-Cache-Control, "^.*stale-if-error=(\d+).*$", "\1");
        }
    } elsif (!beresp.http.Cache-Control && !beresp.http.Expires) {
        # No heuristic freshness at a shared cache: the origin must opt in.
        set beresp.ttl = 0s;
    }

    # Grace covers both stale windows; vcl_hit narrows it to SWR while the backend is healthy.
    if (std.integer(beresp.http.X-RS-SIE, 0) > std.integer(beresp.http.X-RS-SWR, 0)) {
        set beresp.grace = std.duration(beresp.http.X-RS-SIE + "s", 0s);
    } else {
        set beresp.grace = std.duration(beresp.http.X-RS-SWR + "s", 0s);
    }

    # Never store an error page for longer than the origin asked (CPDoS).
    if (beresp.status >= 500) {
        set beresp.ttl = 0s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    set beresp.http.X-RS-URL = bereq.url;
}

sub vcl_backend_error {
    # A background refresh that fails keeps the stale object instead of replacing it.
    if (bereq.is_bgfetch) {
        return (abandon);
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
    if (req.http.X-RS-State ~ "^HIT") {
        set resp.http.Cache-Status = "readscale-edge; hit";
    } elsif (req.http.X-RS-State == "PASS") {
        set resp.http.Cache-Status = "readscale-edge; fwd=bypass";
    } else {
        set resp.http.Cache-Status = "readscale-edge; fwd=miss";
    }
    # Internal headers never leave the edge.
    unset resp.http.xkey;
    unset resp.http.X-RS-URL;
    unset resp.http.X-RS-SWR;
    unset resp.http.X-RS-SIE;
    unset resp.http.Via;
    unset resp.http.X-Varnish;
}
