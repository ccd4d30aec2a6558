"""The package's VCL: it compiles, and the stack's real Varnish running it keeps RFC 9111.

The behaviour tests put the stack's Varnish in front of a scripted origin (each test says
what the origin answers and reads what reached it), so each rule is checked on the exact
response that exercises it. Counts of origin requests and X-Cache/Cache-Status are
asserted, never durations; sleeps only let a TTL run out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from readscale.http import render_vcl
from readscale.stack import Stack, StackConfig, compile_vcl
from readscale.testing.shared import new_stack_root

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("probe", [None, "/healthz"])
def test_package_vcl_compiles(probe: str | None) -> None:
    generated_c = compile_vcl(render_vcl("http://127.0.0.1:8000", probe_path=probe))
    assert "VGC_function_vcl_recv" in generated_c
    assert "vmod_xkey" in generated_c
    assert ("/healthz" in generated_c) == (probe is not None)


def test_a_broken_vcl_is_reported() -> None:
    from readscale.errors import StackError

    broken = render_vcl("http://127.0.0.1:8000").replace("sub vcl_miss {", "sub vcl_miss {\n    nonsense;")
    with pytest.raises(StackError, match="VCL does not compile"):
        compile_vcl(broken)


# -- a scripted origin behind the stack's Varnish ----------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the origin received it."""

    method: str
    headers: dict[str, str]  # lower-case names


@dataclass
class Reply:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b"ok"


Script = Callable[[Seen, int], Reply]  # (request, how many requests this path had before) -> reply


class Origin:
    """An HTTP/1.1 origin on 127.0.0.1 whose answer per path a test scripts; it records
    every request by its full target (path and query)."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.seen: dict[str, list[Seen]] = {}
        self._lock = threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                seen = Seen(self.command, {k.lower(): v for k, v in self.headers.items()})
                with origin._lock:
                    before = origin.seen.setdefault(self.path, [])
                    n = len(before)
                    before.append(seen)
                    script = origin.scripts.get(self.path.split("?", 1)[0])
                reply = script(seen, n) if script else Reply(404, body=b"no script")
                body = b"" if reply.status == 304 or self.command == "HEAD" else reply.body
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                if reply.status != 304:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

            def __getattr__(self, name: str) -> Callable[[], None]:
                if name.startswith("do_"):  # any other method (M-SEARCH, ...)
                    return self._answer
                raise AttributeError(name)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def script(self, path: str, script: Script) -> str:
        self.scripts[path] = script
        return path

    def always(self, path: str, *headers: tuple[str, str], status: int = 200) -> str:
        """Every request for ``path`` gets the same headers and a body counting requests."""
        return self.script(path, lambda _seen, n: Reply(status, list(headers), f"#{n + 1}".encode()))

    def hits(self, path: str) -> int:
        with self._lock:
            return len(self.seen.get(path, []))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class EdgeUnderTest:
    origin: Origin
    stack: Stack

    def client(self) -> httpx.Client:
        # No cookie jar: one Set-Cookie would turn every later request into a PASS.
        return httpx.Client(base_url=self.stack.varnish.url, cookies=_NoCookies(), timeout=30)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        return None


@pytest.fixture(scope="module")
def vcl_edge() -> Iterator[EdgeUnderTest]:
    origin = Origin()
    root = new_stack_root("readscale-vcl-")
    stack = Stack(root / "stack")
    try:
        stack.up(StackConfig(postgres=False, redis=False, varnish=True, varnish_backend=origin.url))
        yield EdgeUnderTest(origin, stack)
    finally:
        stack.down()
        root.rmdir()
        origin.close()


_serial = iter(range(1_000_000))


def fresh_path(name: str) -> str:
    """A path no other test of this module used (the edge is shared by the module)."""
    return f"/{name}/{next(_serial)}"


def states(client: httpx.Client, path: str, n: int, **kwargs: object) -> list[str]:
    return [client.get(path, **kwargs).headers["x-cache"] for _ in range(n)]  # type: ignore[arg-type]


# -- freshness -----------------------------------------------------------------------------


@pytest.mark.parametrize("age", ["7200", "3600"])
def test_cdn_cache_control_max_age_counts_age(vcl_edge: EdgeUnderTest, age: str) -> None:
    path = vcl_edge.origin.always(fresh_path("cdn-age"), ("CDN-Cache-Control", "max-age=3600"), ("Age", age))
    with vcl_edge.client() as client:
        seen = states(client, path, 3)
    assert "HIT" not in seen  # already as old as its max-age: stale on arrival
    assert vcl_edge.origin.hits(path) == 3


def test_cdn_cache_control_ttl_is_what_is_left_after_age(vcl_edge: EdgeUnderTest) -> None:
    path = vcl_edge.origin.always(fresh_path("cdn-age-left"), ("CDN-Cache-Control", "max-age=3600"), ("Age", "600"))
    with vcl_edge.client() as client:
        client.get(path)
        hit = client.get(path)
    assert hit.headers["x-cache"] == "HIT"
    ttl = int(hit.headers["cache-status"].split("ttl=")[1].split(";")[0])
    assert 2990 <= ttl <= 3000
    assert vcl_edge.origin.hits(path) == 1


@pytest.mark.parametrize(
    "age",
    ["abc", "-7200", "7200.0", "10;foo=bar", ""],
    ids=["nonnumeric", "negative", "float", "parameter", "empty"],
)
def test_an_invalid_age_makes_the_response_stale(vcl_edge: EdgeUnderTest, age: str) -> None:
    path = vcl_edge.origin.always(fresh_path("bad-age"), ("Cache-Control", "max-age=3600"), ("Age", age))
    with vcl_edge.client() as client:
        seen = states(client, path, 2)
    assert "HIT" not in seen
    assert vcl_edge.origin.hits(path) == 2


@pytest.mark.parametrize(
    "headers",
    [
        [("Expires", "0")],
        [("Expires", "0"), ("Cache-Control", "public")],
        [("Cache-Control", "public")],
        [("Expires", "not a date")],
        [("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")],  # no heuristic freshness
        [("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "stale-while-revalidate=60")],
    ],
    ids=[
        "expires-0",
        "expires-0-public",
        "bare-public",
        "expires-invalid",
        "last-modified-only",
        "cdn-without-max-age",
    ],
)
def test_no_explicit_freshness_is_never_reused(vcl_edge: EdgeUnderTest, headers: list[tuple[str, str]]) -> None:
    path = vcl_edge.origin.always(fresh_path("no-ttl"), *headers)
    with vcl_edge.client() as client:
        seen = states(client, path, 3)
    assert all(not s.startswith("HIT") for s in seen), seen
    assert vcl_edge.origin.hits(path) == 3


def test_a_future_expires_is_reused_and_a_past_one_is_not(vcl_edge: EdgeUnderTest) -> None:
    future = vcl_edge.origin.always(fresh_path("expires"), ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT"))
    past = vcl_edge.origin.always(fresh_path("expired"), ("Expires", "Thu, 01 Jan 2015 00:00:00 GMT"))
    with vcl_edge.client() as client:
        assert states(client, future, 3) == ["MISS", "HIT", "HIT"]
        assert "HIT" not in states(client, past, 2)
    assert vcl_edge.origin.hits(past) == 2


# -- CDN-Cache-Control governs only when valid ------------------------------------------------


@pytest.mark.parametrize(
    "cdn",
    [
        "max-age=sixty",
        "MAX-AGE=60",
        "max-age=60,,",
        "max-age=60 ; x",
        'max-age="60"',
        "max-age=-60",
        'max-age=60, foo="unterminated',
        "",
    ],
)
@pytest.mark.parametrize("cc", ["no-store", "private, max-age=60", "no-store, max-age=60"])
def test_an_invalid_cdn_cache_control_leaves_cache_control_in_charge(
    vcl_edge: EdgeUnderTest, cdn: str, cc: str
) -> None:
    path = vcl_edge.origin.always(fresh_path("cdn-invalid"), ("Cache-Control", cc), ("CDN-Cache-Control", cdn))
    with vcl_edge.client() as client:
        seen = states(client, path, 3)
    assert all(not s.startswith("HIT") for s in seen), seen
    assert vcl_edge.origin.hits(path) == 3


@pytest.mark.parametrize(
    "cdn",
    [
        "max-age=60",
        "max-age=60, stale-while-revalidate=30",
        'max-age=60;x="y", foo=(1 2)',
        " max-age=60 ",
        "no-cache=?0, max-age=60",
    ],
)
def test_a_valid_cdn_cache_control_governs_over_cache_control(vcl_edge: EdgeUnderTest, cdn: str) -> None:
    path = vcl_edge.origin.always(fresh_path("cdn-valid"), ("Cache-Control", "no-store"), ("CDN-Cache-Control", cdn))
    with vcl_edge.client() as client:
        assert states(client, path, 3) == ["MISS", "HIT", "HIT"]
    assert vcl_edge.origin.hits(path) == 1


@pytest.mark.parametrize("cdn", ["max-age=60, no-store", "private, max-age=60", "max-age=60, no-store=?1"])
def test_cdn_cache_control_refusals_are_obeyed(vcl_edge: EdgeUnderTest, cdn: str) -> None:
    path = vcl_edge.origin.always(fresh_path("cdn-refuse"), ("Cache-Control", "max-age=60"), ("CDN-Cache-Control", cdn))
    with vcl_edge.client() as client:
        assert "HIT" not in states(client, path, 3)
    assert vcl_edge.origin.hits(path) == 3


# -- revalidation -----------------------------------------------------------------------------


def _validated(etag: str, last_modified: str, *headers: tuple[str, str]) -> Script:
    """Answers 304 to a matching If-None-Match or If-Modified-Since, else 200 with a body."""

    def script(seen: Seen, n: int) -> Reply:
        fields = [("ETag", etag), ("Last-Modified", last_modified), *headers]
        if seen.headers.get("if-none-match") == etag or seen.headers.get("if-modified-since") == last_modified:
            return Reply(304, fields)
        return Reply(200, fields, f"body #{n + 1}".encode())

    return script


@pytest.mark.slow
@pytest.mark.parametrize("field_name", ["CDN-Cache-Control", "Cache-Control"])
def test_an_expired_object_is_revalidated_with_the_origin(vcl_edge: EdgeUnderTest, field_name: str) -> None:
    etag, lm = '"v1"', "Mon, 01 Jan 2024 00:00:00 GMT"
    path = vcl_edge.origin.script(fresh_path("revalidate"), _validated(etag, lm, (field_name, "max-age=1")))
    with vcl_edge.client() as client:
        first = client.get(path)
        assert client.get(path).headers["x-cache"] == "HIT"
        time.sleep(1.3)  # past max-age=1, no stale window
        again = client.get(path)
        after = client.get(path)
    conditional = vcl_edge.origin.seen[path][1]
    assert conditional.headers.get("if-none-match") == etag
    assert conditional.headers.get("if-modified-since") == lm
    assert again.status_code == 200
    assert again.text == first.text == "body #1"  # the stored body, refreshed by the 304
    assert "fwd-status=304" in again.headers["cache-status"]
    assert after.headers["x-cache"] == "HIT"  # the 304 made the copy fresh again
    assert vcl_edge.origin.hits(path) == 2


@pytest.mark.parametrize("field_name", ["CDN-Cache-Control", "Cache-Control"])
@pytest.mark.parametrize("directive", ["no-cache", "max-age=0", "max-age=60, no-cache"])
def test_a_no_cache_response_is_never_reused(vcl_edge: EdgeUnderTest, field_name: str, directive: str) -> None:
    etag, lm = '"nc"', "Mon, 01 Jan 2024 00:00:00 GMT"
    path = vcl_edge.origin.script(fresh_path("no-cache"), _validated(etag, lm, (field_name, directive)))
    with vcl_edge.client() as client:
        bodies = [client.get(path).text for _ in range(3)]
    assert bodies == ["body #1", "body #2", "body #3"]  # each one from the origin


# -- Vary: * ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vary",
    [
        [("Vary", "*")],
        [("Vary", "Accept, *")],
        [("Vary", "*, *")],
        [("Vary", ", *")],
        [("Vary", "Accept"), ("Vary", "*")],
    ],
    ids=["star", "accept-star", "star-star", "empty-star", "two-lines"],
)
def test_vary_star_is_never_reused(vcl_edge: EdgeUnderTest, vary: list[tuple[str, str]]) -> None:
    path = vcl_edge.origin.always(fresh_path("vary-star"), ("Cache-Control", "max-age=60"), *vary)
    with vcl_edge.client() as client:
        assert "HIT" not in states(client, path, 3)
    assert vcl_edge.origin.hits(path) == 3


def test_vary_on_a_field_still_stores_one_variant_per_value(vcl_edge: EdgeUnderTest) -> None:
    path = vcl_edge.origin.always(fresh_path("vary"), ("Cache-Control", "max-age=60"), ("Vary", "Accept-Language"))
    with vcl_edge.client() as client:
        de = states(client, path, 2, headers={"accept-language": "de"})
        fr = states(client, path, 2, headers={"accept-language": "fr"})
    assert de == fr == ["MISS", "HIT"]
    assert vcl_edge.origin.hits(path) == 2


# -- unsafe methods invalidate (RFC 9111 §4.4) ----------------------------------------------


def _cached(client: httpx.Client, path: str) -> None:
    assert states(client, path, 2) == ["MISS", "HIT"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH"])
def test_a_successful_unsafe_request_invalidates_the_url(vcl_edge: EdgeUnderTest, method: str) -> None:
    path = vcl_edge.origin.always(fresh_path("unsafe"), ("Cache-Control", "max-age=300"))
    with vcl_edge.client() as client:
        _cached(client, path)
        variant = client.get(path + "?other")  # another URL: untouched
        assert client.get(path + "?other").headers["x-cache"] == "HIT"
        answer = client.request(method, path, content=b"x")
        assert answer.status_code == 200
        after = client.get(path)
        other = client.get(path + "?other")
    assert answer.headers["x-cache"] == "PASS"
    assert after.headers["x-cache"] == "MISS"
    assert other.headers["x-cache"] == "HIT" and other.text == variant.text
    assert [s.method for s in vcl_edge.origin.seen[path]] == ["GET", method, "GET"]


@pytest.mark.parametrize("status", [400, 404, 500])
def test_a_failed_unsafe_request_invalidates_nothing(vcl_edge: EdgeUnderTest, status: int) -> None:
    def script(seen: Seen, n: int) -> Reply:
        if seen.method == "POST":
            return Reply(status, body=b"no")
        return Reply(200, [("Cache-Control", "max-age=300")], f"#{n + 1}".encode())

    path = vcl_edge.origin.script(fresh_path("unsafe-failed"), script)
    with vcl_edge.client() as client:
        _cached(client, path)
        assert client.post(path, content=b"x").status_code == status
        assert client.get(path).headers["x-cache"] == "HIT"


@pytest.mark.parametrize("field_name", ["Location", "Content-Location"])
@pytest.mark.parametrize("form", ["absolute-path", "relative", "absolute-url"])
def test_a_successful_unsafe_request_invalidates_its_same_origin_locations(
    vcl_edge: EdgeUnderTest, field_name: str, form: str
) -> None:
    base = fresh_path("loc")
    target = vcl_edge.origin.always(f"{base}/target", ("Cache-Control", "max-age=300"))
    bystander = vcl_edge.origin.always(f"{base}/bystander", ("Cache-Control", "max-age=300"))
    host = httpx.URL(vcl_edge.stack.varnish.url).netloc.decode()
    value = {"absolute-path": target, "relative": "target", "absolute-url": f"http://{host}{target}"}[form]
    post = vcl_edge.origin.always(f"{base}/form", (field_name, value), status=201)
    foreign = vcl_edge.origin.always(f"{base}/foreign", (field_name, f"http://elsewhere.test{target}"), status=201)
    with vcl_edge.client() as client:
        _cached(client, target)
        _cached(client, bystander)
        assert client.post(foreign, content=b"x").status_code == 201
        assert client.get(target).headers["x-cache"] == "HIT"  # another origin's Location: ignored
        assert client.post(post, content=b"x").status_code == 201
        assert client.get(target).headers["x-cache"] == "MISS"
        assert client.get(bystander).headers["x-cache"] == "HIT"


# -- what worked before keeps working ---------------------------------------------------------


def test_set_cookie_and_private_are_never_stored(vcl_edge: EdgeUnderTest) -> None:
    cookie = vcl_edge.origin.always(fresh_path("cookie"), ("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b"))
    private = vcl_edge.origin.always(fresh_path("private"), ("Cache-Control", "private, max-age=60"))
    private_cc = vcl_edge.origin.always(
        fresh_path("private-cdn"), ("Cache-Control", "private"), ("CDN-Cache-Control", "max-age=60")
    )
    with vcl_edge.client() as client:
        for path in (cookie, private, private_cc):
            assert "HIT" not in states(client, path, 3), path
            assert vcl_edge.origin.hits(path) == 3


def test_internal_fields_never_leave_the_edge(vcl_edge: EdgeUnderTest) -> None:
    path = vcl_edge.origin.always(
        fresh_path("internal"),
        ("CDN-Cache-Control", "max-age=60, stale-while-revalidate=5"),
        ("ETag", '"x"'),
        ("xkey", "tag-a"),
        ("X-HashTwo", "spoof"),
        ("X-RS-SWR", "999"),
    )
    with vcl_edge.client() as client:
        responses = [client.get(path) for _ in range(2)]
    for r in responses:
        leaked = [
            name for name in r.headers if name.startswith("x-rs-") or name in ("xkey", "x-hashtwo", "x-varnish", "via")
        ]
        assert leaked == []
    assert responses[1].headers["x-cache"] == "HIT"


def test_unknown_methods_are_passed_not_piped(vcl_edge: EdgeUnderTest) -> None:
    path = vcl_edge.origin.always(fresh_path("method"), ("Cache-Control", "max-age=60"))
    with vcl_edge.client() as client:
        answer = client.request("M-SEARCH", path)
    assert answer.headers["x-cache"] == "PASS"  # went through vcl_deliver (a pipe never does)
    assert vcl_edge.origin.hits(path) == 1


# -- requests with cookies (issue 13: anonymous readers carry analytics cookies) ---------------


def test_a_request_with_cookies_is_answered_from_the_cache_but_never_fills_it(vcl_edge: EdgeUnderTest) -> None:
    path = vcl_edge.origin.always(fresh_path("cookie-reader"), ("Cache-Control", "max-age=60"))
    with vcl_edge.client() as client:
        assert states(client, path, 2, headers={"cookie": "_ga=GA1.1.42"}) == ["PASS", "PASS"]
        assert [s.headers.get("cookie") for s in vcl_edge.origin.seen[path]] == ["_ga=GA1.1.42"] * 2
        assert states(client, path, 1) == ["MISS"], "a request without cookies fills"
        assert states(client, path, 2, headers={"cookie": "theme=dark"}) == ["HIT", "HIT"]
    assert vcl_edge.origin.hits(path) == 3


def test_a_stored_page_that_varies_on_cookie_answers_only_requests_without_one(vcl_edge: EdgeUnderTest) -> None:
    path = vcl_edge.origin.always(fresh_path("vary-cookie"), ("Cache-Control", "max-age=60"), ("Vary", "Cookie"))
    with vcl_edge.client() as client:
        assert states(client, path, 2) == ["MISS", "HIT"]
        assert states(client, path, 2, headers={"cookie": "session=alice"}) == ["PASS", "PASS"]
    assert [s.headers.get("cookie") for s in vcl_edge.origin.seen[path]] == [None, "session=alice", "session=alice"]


@pytest.mark.parametrize(
    "headers",
    [
        {"cookie": "_ga=GA1.1.42; readscale_token=rs1.x"},
        {"cookie": "readscale_token=rs1.x"},
        {"authorization": "Bearer x"},
    ],
)
def test_a_causal_token_or_credentials_pass(vcl_edge: EdgeUnderTest, headers: dict[str, str]) -> None:
    path = vcl_edge.origin.always(fresh_path("token"), ("Cache-Control", "max-age=60"))
    with vcl_edge.client() as client:
        assert states(client, path, 2) == ["MISS", "HIT"]
        assert states(client, path, 2, headers=headers) == ["PASS", "PASS"], "a session that wrote reads the origin"
    assert vcl_edge.origin.hits(path) == 3


def test_a_background_refresh_goes_without_the_readers_cookies(vcl_edge: EdgeUnderTest) -> None:
    path = vcl_edge.origin.always(fresh_path("bg-cookie"), ("Cache-Control", "max-age=1, stale-while-revalidate=60"))
    with vcl_edge.client() as client:
        assert states(client, path, 1) == ["MISS"]
        time.sleep(1.2)  # let the TTL run out
        assert states(client, path, 1, headers={"cookie": "session=alice"}) == ["HIT-STALE"]
        for _ in range(100):  # the refresh runs in the background
            if vcl_edge.origin.hits(path) == 2:
                break
            time.sleep(0.05)
    refresh = vcl_edge.origin.seen[path][1]
    assert refresh.headers.get("x-readscale-bgfetch") == "1"
    assert "cookie" not in refresh.headers, "the refreshed copy is everybody's, not the reader's"
