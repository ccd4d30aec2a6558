"""Acceptance: the HTTP caching conformance suite (http-tests/cache-tests, from npm) against
the stack's Varnish with readscale's VCL and against stock Varnish, in the same run.

- Every required test passes with readscale's VCL, except those in allowlist.toml, each
  with its reason; the list is checked both ways, so it cannot go stale.
- Every test stock Varnish passes (or answers "yes"), readscale's VCL passes too.
- The counts docs/edge.md and docs/http.md give are the ones this run measures.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from tests.http.conformance.cache_tests import (
    SUITE_VERSION,
    SuiteRun,
    SuiteTest,
    load_allow_list,
    outcome_of,
    short_window,
    verdicts,
)
from tests.http.conformance.conftest import CacheTestsOrigin

ROOT = Path(__file__).parents[3]


# -- the suite's report, reproduced (pure) --------------------------------------------------


def _info(kind: str = "required", *depends_on: str) -> SuiteTest:
    return SuiteTest("suite", "name", kind, depends_on)


def test_verdicts_follow_the_suites_own_report() -> None:
    tests = {
        "gate": _info("check"),
        "ok": _info("required", "gate"),
        "bad": _info("required", "gate"),
        "setup": _info("required"),
        "opt": _info("optimal"),
        "blocked": _info("required", "opt"),
        "chained": _info("required", "blocked"),
        "check-no": _info("check"),
        "missing": _info("required"),
    }
    results = {
        "gate": True,
        "ok": True,
        "bad": ["Assertion", "Response 2 comes from cache"],
        "setup": ["Setup", "Response 1 status is 503, not 200"],
        "opt": ["Assertion", "Response 2 does not come from cache"],
        "blocked": True,  # passed, but its dependency did not: not counted
        "chained": True,
        "check-no": ["Assertion", "no"],
    }
    assert verdicts(results, tests) == {
        "gate": "yes",
        "ok": "pass",
        "bad": "fail",
        "setup": "setup_fail",
        "opt": "optional_fail",
        "blocked": "dependency_fail",
        "chained": "dependency_fail",
        "check-no": "no",
        "missing": "untested",
    }


def test_a_transport_error_is_not_an_answer() -> None:
    tests = {"ok": _info(), "bad": _info(), "setup": _info(), "hung": _info()}
    run = SuiteRun(
        "edge",
        {
            "ok": True,
            "bad": ["Assertion", "Response 2 comes from cache"],
            "setup": ["Setup", "Response 1 status is 503, not 200"],
            "hung": ["FetchError", "request to http://127.0.0.1:1/config/x failed, reason: socket hang up"],
        },
        tests,
    )
    assert run.not_answered() == {"hung"}


def test_a_step_that_needs_a_response_fresh_for_less_than_the_pause_is_a_short_window() -> None:
    stored = {"response_headers": [["Cache-Control", "max-age=2"]], "pause_after": True}
    assert short_window([stored, {"expected_type": "etag_validated"}, {"expected_type": "cached"}])
    assert short_window([{"response_headers": [["Expires", 1]]}, {"expected_type": "cached"}])
    # Stale after the pause: more time only makes it more stale.
    assert not short_window([stored, {"expected_type": "not_cached"}])
    assert not short_window([{"response_headers": [["Cache-Control", "max-age=3600"]]}, {"expected_type": "cached"}])


def test_only_short_window_tests_that_did_not_pass_are_rerun_and_their_rerun_counts() -> None:
    tests = {
        "short-fail": SuiteTest("s", "n", "required", (), True),
        "short-pass": SuiteTest("s", "n", "required", (), True),
        "long-fail": _info(),
        "after": _info("required", "short-fail"),
    }
    first = SuiteRun(
        "edge",
        {"short-fail": ["Setup", "Response 3 does not come from cache"], "short-pass": True,
         "long-fail": ["Assertion", "no"], "after": True},
        tests,
    )  # fmt: skip
    assert first.to_rerun() == ["short-fail"]
    merged = first.with_rerun(SuiteRun("edge", {"short-fail": True}, tests))
    assert merged.rerun == ("short-fail",)
    assert merged.verdicts() == {"short-fail": "pass", "short-pass": "pass", "long-fail": "fail", "after": "pass"}
    with pytest.raises(ValueError, match="rerun ran"):
        first.with_rerun(SuiteRun("edge", {"long-fail": True}, tests))


def test_the_allow_list_is_well_formed() -> None:
    groups = load_allow_list()
    assert groups, "allowlist.toml lists nothing: then this file should go"
    assert all(g.reason and g.tests for g in groups)


# -- the suite against both edges -------------------------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(str(ipaddress.IPv4Address(raw[::-1])))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    found.add(str(ipaddress.IPv6Address(words)))
    return found


def _explain(run: SuiteRun, ids: set[str]) -> str:
    def again(test_id: str) -> str:
        return " (short window: this is its second, lone run)" if test_id in run.rerun else ""

    return "\n".join(
        f"  {test_id} [{run.verdicts()[test_id]}] {run.message(test_id)}{again(test_id)}" for test_id in sorted(ids)
    )


@pytest.mark.stack
@pytest.mark.slow
@pytest.mark.timeout(600)
class TestAgainstVarnish:
    def test_the_suites_origin_listens_on_loopback_only(self, cache_tests_origin: CacheTestsOrigin) -> None:
        # Its server.mjs binds every interface; bind-loopback.cjs must have narrowed it.
        listening = _listening_addresses(cache_tests_origin.port)
        assert listening == {"127.0.0.1"}

    def test_every_test_ran_and_the_gate_passed_on_both(self, conformance_runs: dict[str, SuiteRun]) -> None:
        for run in conformance_runs.values():
            assert set(run.results) == set(run.tests), f"{run.target}: some tests did not run"
            # The suite's gate: with a default TTL (stock Varnish's 120 s) it fails, and
            # most other tests are "not run"; the comparison below would prove nothing.
            assert run.verdicts()["freshness-none"] == "yes", run.target
            assert run.passing(), run.target
            # A request that died on its way (not the suite's verdict on the cache) would be
            # counted as a failure: the counts below would then depend on the machine's load.
            lost = run.not_answered()
            assert not lost, f"{run.target}: the client could not talk to the cache:\n" + _explain(run, lost)

    def test_every_required_test_passes_except_the_allow_list(self, conformance_runs: dict[str, SuiteRun]) -> None:
        run = conformance_runs["readscale"]
        v = run.verdicts()
        allowed = {t: g for g in load_allow_list() for t in g.tests}
        unknown = set(allowed) - {t for t, info in run.tests.items() if info.kind == "required"}
        assert not unknown, f"allowlist.toml names tests that are not required tests of {SUITE_VERSION}: {unknown}"
        failing = {t for t, info in run.tests.items() if info.kind == "required" and v[t] != "pass"}
        unexplained = failing - set(allowed)
        assert not unexplained, "required tests that fail with readscale's VCL:\n" + _explain(run, unexplained)
        now_passing = set(allowed) - failing
        assert not now_passing, "allow-listed tests that pass now (remove them):\n" + _explain(run, now_passing)
        wrong = {t for t, g in allowed.items() if outcome_of(v[t]) != g.outcome}
        assert not wrong, "allow-listed tests whose outcome is not what allowlist.toml says:\n" + _explain(run, wrong)

    def test_readscale_passes_every_test_stock_varnish_passes(self, conformance_runs: dict[str, SuiteRun]) -> None:
        stock, ours = conformance_runs["stock"], conformance_runs["readscale"]
        lost = stock.passing() - ours.passing()
        assert not lost, "stock Varnish passes these and readscale's VCL does not:\n" + _explain(ours, lost)

    def test_the_docs_give_the_counts_this_run_measures(self, conformance_runs: dict[str, SuiteRun]) -> None:
        edge_md = (ROOT / "docs" / "edge.md").read_text()
        http_md = (ROOT / "docs" / "http.md").read_text()  # the README's HTTP section moved there
        counts = {name: run.counts() for name, run in conformance_runs.items()}
        allow_listed = sum(len(g.tests) for g in load_allow_list())
        for name, label in (("readscale", "readscale's VCL"), ("stock", "stock Varnish")):
            cells = " | ".join(f"{passed} of {total}" for passed, total in counts[name].values())
            row = f"| {label} | {cells} |"
            assert row in edge_md, f"docs/edge.md should have the row:\n{row}"
        ours, stock = counts["readscale"]["required"], counts["stock"]["required"]
        claim = (
            f"passes {ours[0]} of its {ours[1]} required tests (stock Varnish {stock[0]}); "
            f"the other {allow_listed} are allow-listed"
        )
        assert claim in http_md, f"docs/http.md should say: {claim}"
        assert claim in edge_md, f"docs/edge.md should say: {claim}"
        assert re.search(rf"http-cache-tests\W+{re.escape(SUITE_VERSION)}", edge_md)
        assert ours[0] + allow_listed == ours[1]
