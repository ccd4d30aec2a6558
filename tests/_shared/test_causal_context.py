"""The causal context: scoping, merging, carrying through jobs and services (no I/O)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readscale import LATEST, TokenSigner, causal_context, dump_token, load_token
from readscale._shared.replicas.causal_context import current_mode as current_mode_for_test
from readscale.replicas import CausalContext, ClusterIdentity, current_context, use_mode
from readscale.replicas._carry import restore, stores_token, update

SIGNER = TokenSigner(b"context test secret, 32 bytes..")
LIVE = ClusterIdentity(7, 1)


def test_contexts_nest_and_restore() -> None:
    assert current_context() is None
    with causal_context() as outer:
        assert current_context() is outer
        with causal_context(LIVE.at(5)) as inner:
            assert current_context() is inner
            assert inner.token == LIVE.at(5)
        assert current_context() is outer
        with causal_context(outer) as again:
            assert again is outer
    assert current_context() is None


def test_a_context_only_moves_forward_and_remembers_writes() -> None:
    context = CausalContext()
    context.observe(LIVE.at(10))
    assert (context.token, context.written_at, context.changed) == (LIVE.at(10), None, True)
    context.observe(LIVE.at(3))
    assert context.token == LIVE.at(10)
    context.record_write(LIVE.at(20), at=100.0)
    context.record_write(LIVE.at(15), at=50.0)
    assert context.token == LIVE.at(20)
    assert context.written_at == 100.0, "the last write's time never goes back either"
    assert context.reconcile(ClusterIdentity(7, 2)) is None
    assert (context.token, context.written_at, context.resets) == (None, None, 1)


def test_threads_each_get_their_own_context() -> None:
    seen: list[object] = []

    def worker() -> None:
        seen.append(current_context())
        with causal_context() as mine:
            seen.append(current_context() is mine)

    with causal_context():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen == [None, True]


def test_a_token_travels_through_a_job_message() -> None:
    with causal_context() as producer:
        assert dump_token(SIGNER) is None, "nothing to carry yet"
        producer.record_write(LIVE.at(1234), at=time.time())
        message = {"readscale_token": dump_token(SIGNER)}
    with causal_context(load_token(SIGNER, message["readscale_token"])) as worker:
        assert worker.token == LIVE.at(1234)
        assert worker.written_at is not None
    with causal_context(load_token(SIGNER, "forged")) as stranger:
        assert stranger.token is None


def test_use_mode_scopes_a_default_read_mode() -> None:
    assert current_mode_for_test() is None
    with use_mode(LATEST):
        assert current_mode_for_test() == LATEST
    assert current_mode_for_test() is None


def test_carry_rules_for_web_integrations() -> None:
    now = time.time()
    genuine = SIGNER.dumps(LIVE.at(50), now=now, written_at=now - 1)
    newer = SIGNER.dumps(LIVE.at(80), now=now)
    merged = restore(SIGNER, genuine, newer, now=now)
    assert merged.context.token == LIVE.at(80), "cookie and header merge by max"
    assert merged.context.written_at is not None
    assert merged.via_header
    assert not merged.bad_cookie
    quiet = update(merged, SIGNER, persist="advance", now=now)
    assert quiet.cookie is None, "nothing moved: nothing to store"
    assert quiet.header is None, "an unchanged token is not sent back: the response stays shareable"
    bad = restore(SIGNER, "tampered", None, now=now)
    assert bad.bad_cookie
    assert update(bad, SIGNER, persist="advance", now=now).clear_cookie
    read_only = restore(SIGNER, genuine, None, now=now)
    read_only.context.observe(LIVE.at(60))
    assert update(read_only, SIGNER, persist="write", now=now).cookie is None
    assert not stores_token(read_only, persist="write"), "no token leaves: its reads need no settling"
    assert update(read_only, SIGNER, persist="advance", now=now).cookie is not None
    assert stores_token(read_only, persist="advance")
    assert update(read_only, SIGNER, persist="session", now=now).cookie is not None, "a session with a token"
    assert stores_token(read_only, persist="session")
    anonymous = restore(SIGNER, None, None, now=now)
    anonymous.context.observe(LIVE.at(60))
    assert update(anonymous, SIGNER, persist="session", now=now) == update(anonymous, SIGNER, persist="write", now=now)
    assert update(anonymous, SIGNER, persist="session", now=now).cookie is None, "no cookie for an anonymous read"
    assert not stores_token(anonymous, persist="session"), "an anonymous reader's reads need no settling"
    read_only.context.record_write(LIVE.at(70), at=now)
    wrote = update(read_only, SIGNER, persist="write", now=now)
    assert wrote.cookie is not None and wrote.header == wrote.cookie, "a write answers in the header too"
    assert stores_token(read_only, persist="write")


# -- unsettled reads ---------------------------------------------------------------------------
#
# A model of one session reading on nodes whose positions only grow: a statement that
# finishes on node n saw at most n's position then. Reads of a node's position (settles)
# may run at the same time as statements and as each other. Whatever the interleaving,
# every statement that finished is covered: the token is at or past what it saw, or its
# node is still reported unsettled (the next read settles it).

NODES = ("r1", "r2", "primary")


class _Router:
    """The owner a context keeps marks for (a router, as far as the context knows)."""

    def settle(self, context: CausalContext | None = None) -> None:
        raise AssertionError("not called in this model")


operation = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from(NODES), st.integers(1, 100)),
    st.tuples(st.just("statement"), st.sampled_from(NODES), st.just(0)),
    st.tuples(st.just("open"), st.sampled_from(NODES), st.just(0)),
    st.tuples(st.just("close"), st.sampled_from(NODES), st.booleans().map(int)),
    st.tuples(st.just("begin settle"), st.just(""), st.just(0)),
    st.tuples(st.just("read positions"), st.just(""), st.integers(0, 3)),
    st.tuples(st.just("finish settle"), st.just(""), st.integers(0, 3)),
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(operation, max_size=40))
def test_every_finished_statement_is_covered_by_the_token_or_still_unsettled(
    ops: list[tuple[str, str, int]],
) -> None:
    owner = _Router()
    context = CausalContext()
    position = dict.fromkeys(NODES, 1000)
    seen: list[tuple[str, int]] = []  # (node, position its statement saw at most)
    # Settles begun, not finished: the marks they began with, the positions they read.
    settles: list[tuple[dict[str, int], dict[str, int] | None]] = []
    open_blocks: dict[str, int] = dict.fromkeys(NODES, 0)
    for op, node, arg in ops:
        if op == "advance":
            position[node] += arg
        elif op == "statement":
            seen.append((node, position[node]))
            if not open_blocks[node]:  # statements inside a block are covered by the block
                context.note_read(owner, node)
        elif op == "open":
            open_blocks[node] += 1
            context.open_read(owner, node)
        elif op == "close" and open_blocks[node]:
            open_blocks[node] -= 1
            if arg:  # the block read its node's position after its statements
                context.observe(LIVE.at(position[node]))
            context.close_read(owner, node, settled=bool(arg))
        elif op == "begin settle":
            settles.append((context.unsettled(owner), None))
        elif op == "read positions" and settles:
            i = arg % len(settles)
            marks, _ = settles[i]
            settles[i] = (marks, {name: position[name] for name in marks})
        elif op == "finish settle" and settles:
            i = arg % len(settles)
            marks, positions = settles[i]
            if positions is not None:
                del settles[i]
                for name in marks:
                    context.observe(LIVE.at(positions[name]))
                context.settled(owner, marks)
        token = context.token
        unsettled = context.unsettled(owner)
        for name, saw in seen:
            assert name in unsettled or (token is not None and token.lsn >= saw), (name, saw, token, unsettled)
    assert (context.unsettled_owners() == [owner]) is bool(context.unsettled(owner))


def test_a_mark_made_after_a_settle_began_survives_it() -> None:
    owner = _Router()
    context = CausalContext()
    context.note_read(owner, "r1")
    begun = context.unsettled(owner)
    context.note_read(owner, "r1")  # another statement finished meanwhile
    context.settled(owner, begun)
    assert "r1" in context.unsettled(owner)
    context.settled(owner, context.unsettled(owner))
    assert context.unsettled(owner) == {}
    assert context.unsettled_owners() == []


def test_an_open_block_stays_unsettled_until_it_closes() -> None:
    owner = _Router()
    context = CausalContext()
    context.open_read(owner, "r1")
    context.open_read(owner, "r1")
    context.settled(owner, context.unsettled(owner))
    assert set(context.unsettled(owner)) == {"r1"}, "a settle during a block does not cover its later statements"
    context.close_read(owner, "r1", settled=True)
    assert set(context.unsettled(owner)) == {"r1"}, "the other block is still open"
    context.close_read(owner, "r1", settled=False)
    assert set(context.unsettled(owner)) == {"r1"}, "closed unsettled: marked"
    context.settled(owner, context.unsettled(owner))
    assert context.unsettled(owner) == {}


def test_dump_token_settles_a_sync_router_and_warns_once_about_an_async_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settled: list[CausalContext | None] = []

    class SyncRouter:
        def settle(self, context: CausalContext | None = None) -> None:
            settled.append(context)
            assert context is not None
            context.observe(LIVE.at(5000))
            context.settled(self, context.unsettled(self))

    class AsyncRouter:
        async def settle(self, context: CausalContext | None = None) -> None:
            raise AssertionError("sync code cannot await it")

    sync_router, async_router = SyncRouter(), AsyncRouter()
    with causal_context() as ctx:
        ctx.note_read(sync_router, "r1")
        ctx.note_read(async_router, "r2")
        carried = load_token(SIGNER, dump_token(SIGNER))
        dump_token(SIGNER)
    assert settled == [ctx], "settled once: nothing is left to settle the second time"
    assert carried is not None
    assert carried.token.lsn == 5000, "the job carries what the read saw"
    assert sum("await router.settle()" in r.message for r in caplog.records) == 1


@pytest.mark.anyio
async def test_async_code_awaits_async_routers_and_runs_sync_ones_in_a_thread() -> None:
    from readscale._shared.replicas.causal_context import settle_context_async

    ran: dict[str, str] = {}

    class SyncRouter:
        def settle(self, context: CausalContext | None = None) -> None:
            ran["sync"] = threading.current_thread().name
            assert context is not None
            context.settled(self, context.unsettled(self))

    class AsyncRouter:
        async def settle(self, context: CausalContext | None = None) -> None:
            ran["async"] = threading.current_thread().name
            assert context is not None
            context.settled(self, context.unsettled(self))

    with causal_context() as ctx:
        ctx.note_read(SyncRouter(), "r1")
        ctx.note_read(AsyncRouter(), "r2")
        await settle_context_async()
    assert ran["async"] == threading.current_thread().name
    assert ran["sync"] != threading.current_thread().name, "a sync router's round trip must not block the loop"
    assert ctx.unsettled_owners() == []
