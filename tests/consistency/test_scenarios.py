"""The harness's scenarios (pure: no server): what each seed runs, and that the seeds CI
runs cover every dimension the acceptance names."""

from __future__ import annotations

from readscale._core.consistency.history import Claims
from readscale.bench.consistency.scenario import (
    CACHE_APIS,
    READ_APIS,
    ROUTER_APIS,
    WB_API,
    Scenario,
    claims_for,
    draw_scenario,
)
from tests.consistency.test_harness import DURATION, SEEDS


def features(s: Scenario) -> set[str]:
    out = {f"{s.processes} processes", "CDC on" if s.cdc else "CDC off", f"bus {s.bus}",
           "default tombstone" if s.tombstone_ttl is None else "long tombstone", *s.apis}  # fmt: skip
    if s.cdc_only:
        out.add("CDC-only writes")
    if s.read_block_delay >= 0.1:
        out.add("slow read() blocks")
    if s.anonymous:
        out.add("anonymous readers")
    out.add("many cold keys" if s.keys >= 40 else "few hot keys")
    out.add(f"backend {s.backend}")
    if s.write_behind:
        out.add("write-behind")
    for fault in s.faults:
        out.add(fault.action)
        if fault.action == "delay":
            out.add("delay >= 25s" if fault.value >= 25 else "delay 4-24s" if fault.value >= 4 else "delay < 4s")
    return out


def test_a_seed_names_one_scenario() -> None:
    assert draw_scenario(7, 6.0) == draw_scenario(7, 6.0)
    assert draw_scenario(7, 6.0) != draw_scenario(8, 6.0)
    longer = draw_scenario(7, 60.0)
    assert [f.action for f in longer.faults] == [f.action for f in draw_scenario(7, 6.0).faults]


def test_faults_come_undone_inside_the_run() -> None:
    for seed in range(1, 300):
        scenario = draw_scenario(seed, DURATION)
        for fault in scenario.faults:
            assert 0 <= fault.at < scenario.duration
        actions = [f.action for f in scenario.faults]
        for start, stop in (("pause", "resume"), ("kill", "start"), ("bus_kill", "bus_start"),
                            ("redis_kill", "redis_start")):  # fmt: skip
            assert actions.count(start) == actions.count(stop), (seed, actions)


def test_the_ci_seeds_cover_every_dimension() -> None:
    covered = set().union(*(features(draw_scenario(seed, DURATION)) for seed in SEEDS))
    wanted = {
        *READ_APIS, "1 processes", "2 processes", "3 processes", "CDC on", "CDC off", "CDC-only writes",
        "bus shared", "bus separate", "default tombstone", "long tombstone", "slow read() blocks",
        "anonymous readers", "delay >= 25s", "delay 4-24s", "delay < 4s", "pause", "kill", "bus_kill",
        "redis_kill", "many cold keys", "few hot keys", "backend redis", "backend memcached", "backend cluster",
        "write-behind",
    }  # fmt: skip
    assert wanted - covered == set()


def test_claims_follow_the_readme() -> None:
    for api in ROUTER_APIS:
        assert claims_for(api, "session", False, 1.0) == (Claims(True, True), True)
        assert claims_for(api, "latest", False, 1.0) == (Claims(True, True, 0.0), True)
        assert claims_for(api, "bs:2", False, 1.0) == (Claims(max_staleness=2.0), True)
    for api in (*CACHE_APIS, WB_API):
        hit, observes = claims_for(api, "session", False, 1.0)
        assert (hit.invalidation_bound, hit.monotonic_reads, observes) == (1.0, False, False)
        assert hit.read_your_writes == (api == "cache_profile"), "only PROFILE entries promise it on a hit"
        loaded, observes = claims_for(api, "session", True, 1.0)
        assert (loaded, observes) == (Claims(True, True, None, 1.0), True), "a load is a router read"
