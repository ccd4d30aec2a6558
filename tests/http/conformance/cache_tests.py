"""The HTTP caching conformance suite (http-tests/cache-tests, npm ``http-cache-tests``):
reading its results and the project's allow-list. Pure: no servers, no I/O beyond files.

The suite reports, per test id, ``true`` or ``[kind, message]``. Its web page turns that
into a verdict (``lib/display.mjs``, ``determineTestResult``); :func:`verdicts` does the
same here:

- a test whose ``depends_on`` test did not pass (or say "yes") is ``dependency_fail``: the
  suite does not count it, whatever it returned;
- ``Setup`` errors are ``setup_fail`` (the cache mangled a step the test relies on);
- otherwise ``required`` tests ``pass`` or ``fail``, ``optimal`` ones ``pass`` or
  ``optional_fail``, and ``check`` ones (informational) answer ``yes`` or ``no``.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ALLOW_LIST = HERE / "allowlist.toml"
SUITE_VERSION = json.loads((HERE / "package.json").read_text())["dependencies"]["http-cache-tests"]

PASSING = frozenset({"pass", "yes"})
KINDS = ("required", "optimal", "check")
SUITE_FAILURES = frozenset({"Assertion", "Setup"})  # the error names lib/utils.mjs gives


PAUSE = 3  # seconds: the suite's pause between two steps (client/utils.mjs, pause_after)


@dataclass(frozen=True)
class SuiteTest:
    suite: str
    name: str
    kind: str
    depends_on: tuple[str, ...]
    short_window: bool = False  # see short_window()


_LIFETIME = re.compile(r'(?:s-)?max-age="?(\d+)')


def short_window(requests: list[dict[str, Any]]) -> bool:
    """Whether the test stores a response fresh for less than the suite's pause (max-age=1
    or 2, or Expires 1 or 2 s ahead) and a later step expects it from the cache: then its
    verdict depends on how fast the machine runs the steps in between, not only on the
    cache (304-etag-update-response-*, cc-resp-must-revalidate-stale, ...)."""
    for at, request in enumerate(requests):
        lifetimes = []
        for header in request.get("response_headers", []):
            field, value = str(header[0]).lower(), header[1]
            if field in ("cache-control", "surrogate-control", "cdn-cache-control"):
                lifetimes += [int(m) for m in _LIFETIME.findall(str(value))]
            elif field == "expires" and isinstance(value, int):
                lifetimes.append(value)
        if any(0 < lifetime < PAUSE for lifetime in lifetimes) and any(
            later.get("expected_type") == "cached" for later in requests[at + 1 :]
        ):
            return True
    return False


@dataclass(frozen=True)
class SuiteRun:
    """One run of the suite against one cache."""

    target: str
    results: dict[str, Any]
    tests: dict[str, SuiteTest]
    rerun: tuple[str, ...] = ()  # the tests whose results come from a second, lone run

    @classmethod
    def from_json(cls, target: str, text: str) -> SuiteRun:
        data = json.loads(text)
        tests = {
            test_id: SuiteTest(
                t["suite"], t["name"], t["kind"], tuple(t["depends_on"]), short_window(t.get("requests", []))
            )
            for test_id, t in data["tests"].items()
        }
        return cls(target, data["results"], tests)

    def to_rerun(self) -> list[str]:
        """The short-window tests (see short_window()) this run did not pass: on a loaded
        machine the whole suite at once (every test concurrently) can take longer than
        their window, so each is run again, alone with the others of this list."""
        v = self.verdicts()
        return sorted(t for t, info in self.tests.items() if info.short_window and v[t] not in PASSING)

    def with_rerun(self, rerun: SuiteRun) -> SuiteRun:
        """This run with the results of ``rerun`` (of the tests to_rerun() named) instead."""
        if set(rerun.results) != set(self.to_rerun()):
            raise ValueError(f"{self.target}: the rerun ran {sorted(rerun.results)}, not {self.to_rerun()}")
        return replace(self, results={**self.results, **rerun.results}, rerun=tuple(sorted(rerun.results)))

    def verdicts(self) -> dict[str, str]:
        return verdicts(self.results, self.tests)

    def passing(self) -> set[str]:
        return {test_id for test_id, v in self.verdicts().items() if v in PASSING}

    def counts(self) -> dict[str, tuple[int, int]]:
        """(passed or "yes", total) per kind."""
        v = self.verdicts()
        out = {}
        for kind in KINDS:
            ids = [test_id for test_id, info in self.tests.items() if info.kind == kind]
            out[kind] = (sum(v[i] in PASSING for i in ids), len(ids))
        return out

    def not_answered(self) -> set[str]:
        """The tests whose result is neither a pass nor the suite's own verdict on the cache
        (an ``Assertion`` or a ``Setup`` failure): the client failed to talk to the cache,
        for example a "socket hang up" on a connection the cache had closed. Such a result
        says nothing about the cache, and counted as a failure it makes the counts flap."""
        return {
            test_id
            for test_id, result in self.results.items()
            if result is not True and result[0] not in SUITE_FAILURES
        }

    def message(self, test_id: str) -> str:
        result = self.results.get(test_id)
        if result is True:
            return "passed"
        if result is None:
            return "not run"
        return f"{result[0]}: {result[1]}"


def verdicts(results: dict[str, Any], tests: dict[str, SuiteTest]) -> dict[str, str]:
    """Each test's verdict, as the suite's own report computes it."""
    memo: dict[str, str] = {}

    def verdict(test_id: str) -> str:
        if test_id in memo:
            return memo[test_id]
        info = tests[test_id]
        result = results.get(test_id)
        if result is None:
            out = "untested"
        elif any(verdict(dep) not in PASSING for dep in info.depends_on):
            out = "dependency_fail"
        elif result is not True and result[0] == "Setup":
            out = "retry" if result[1] == "retry" else "setup_fail"
        elif info.kind == "required":
            out = "pass" if result is True else "fail"
        elif info.kind == "optimal":
            out = "pass" if result is True else "optional_fail"
        elif info.kind == "check":
            out = "yes" if result is True else "no"
        else:
            raise ValueError(f"test {test_id}: unknown kind {info.kind!r}")
        memo[test_id] = out
        return out

    return {test_id: verdict(test_id) for test_id in tests}


WHYS: tuple[str, ...] = ("design", "rfc", "varnish")
OUTCOMES = ("fails", "not run")


@dataclass(frozen=True)
class Difference:
    """A group of required tests the edge does not pass, for one reason."""

    why: str
    outcome: str  # "fails" (fail or setup_fail) or "not run" (dependency_fail)
    reason: str
    tests: tuple[str, ...]


def load_allow_list(path: Path = ALLOW_LIST) -> list[Difference]:
    """The allow-list, checked for shape: every entry names why, what the suite reports
    and a reason, and no test is listed twice."""
    data = tomllib.loads(path.read_text())
    if data.get("suite") != SUITE_VERSION:
        raise ValueError(f"{path.name} is for http-cache-tests {data.get('suite')}, the lock pins {SUITE_VERSION}")
    groups = [
        Difference(g["why"], g["outcome"], " ".join(g["reason"].split()), tuple(g["tests"]))
        for g in data.get("differs", [])
    ]
    seen: Counter[str] = Counter(t for g in groups for t in g.tests)
    problems = [f"{t} is listed {n} times" for t, n in seen.items() if n > 1]
    for g in groups:
        if g.why not in WHYS:
            problems.append(f"{g.tests}: why must be one of {WHYS}, not {g.why!r}")
        if g.outcome not in OUTCOMES:
            problems.append(f"{g.tests}: outcome must be one of {OUTCOMES}, not {g.outcome!r}")
        if len(g.reason) < 40 or not g.tests:
            problems.append(f"{g.tests}: each group needs tests and a reason that explains them")
    if problems:
        raise ValueError(f"{path.name}: " + "; ".join(problems))
    return groups


def outcome_of(verdict: str) -> str:
    return "not run" if verdict == "dependency_fail" else "fails"
