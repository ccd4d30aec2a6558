"""The per-node purge backlog: nothing a node missed is forgotten, hard beats soft, and an
overflow degrades to a ban of everything rather than dropping purges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from readscale._core.http.backlog import EdgeBacklog, Replay


def test_an_empty_backlog_replays_nothing() -> None:
    backlog = EdgeBacklog()
    assert backlog.empty and backlog.since is None and backlog.replay().empty


def test_missed_purges_are_replayed_sorted_and_soft_stays_soft() -> None:
    backlog = EdgeBacklog().add_tags(["b", "a"], soft=True, now=10.0).add_urls(["/x"], now=11.0)
    backlog = backlog.add_tags(["c"], soft=False, now=12.0)
    assert backlog.replay() == Replay(hard=("c",), soft=("a", "b"), urls=("/x",))
    assert backlog.since == 10.0 and backlog.size == 4


def test_a_hard_purge_wins_over_a_soft_one_in_either_order() -> None:
    first_soft = EdgeBacklog().add_tags(["t"], soft=True, now=0).add_tags(["t"], soft=False, now=1)
    first_hard = EdgeBacklog().add_tags(["t"], soft=False, now=0).add_tags(["t"], soft=True, now=1)
    assert first_soft.replay() == first_hard.replay() == Replay(hard=("t",))


def test_past_its_limit_the_backlog_bans_everything_and_stays_so() -> None:
    backlog = EdgeBacklog(limit=2).add_tags(["a", "b"], soft=True, now=0)
    assert not backlog.ban_all
    backlog = backlog.add_urls(["/c"], now=1)
    assert backlog.replay() == Replay(ban_all=True) and backlog.size == 1
    assert backlog.add_tags(["d"], soft=True, now=2).replay() == Replay(ban_all=True)
    assert backlog.since == 0


def test_cleared_keeps_the_limit_and_forgets_the_rest() -> None:
    backlog = EdgeBacklog(limit=5).add_tags(["a"], soft=False, now=3).cleared()
    assert backlog == EdgeBacklog(limit=5)


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        EdgeBacklog(limit=-1)


_ops = st.lists(
    st.tuples(st.sampled_from(["hard", "soft", "url"]), st.lists(st.sampled_from("abcdefgh"), max_size=4)),
    max_size=12,
)


@given(_ops, st.integers(min_value=0, max_value=20))
def test_every_missed_purge_is_covered_by_the_replay(ops: list[tuple[str, list[str]]], limit: int) -> None:
    backlog = EdgeBacklog(limit=limit)
    for now, (kind, items) in enumerate(ops):
        if kind == "url":
            backlog = backlog.add_urls(items, now=now)
        else:
            backlog = backlog.add_tags(items, soft=kind == "soft", now=now)
    replay = backlog.replay()
    assert backlog.size <= max(limit, 1)
    if replay.ban_all:
        assert replay == Replay(ban_all=True)
        return
    hard = {t for kind, items in ops if kind == "hard" for t in items}
    soft = {t for kind, items in ops if kind == "soft" for t in items}
    urls = {u for kind, items in ops if kind == "url" for u in items}
    assert set(replay.hard) == hard
    assert set(replay.soft) == soft - hard
    assert set(replay.urls) == urls
    assert (backlog.since is None) == replay.empty
