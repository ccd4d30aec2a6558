"""The causal context: scoping, merging, carrying through jobs and services (no I/O)."""

from __future__ import annotations

import threading
import time

from readscale._causal import current_mode as current_mode_for_test
from readscale.replicas import (
    LATEST,
    CausalContext,
    ClusterIdentity,
    TokenSigner,
    causal_context,
    current_context,
    dump_token,
    load_token,
    use_mode,
)
from readscale.replicas._carry import restore, update

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
    assert update(read_only, SIGNER, persist="advance", now=now).cookie is not None
    assert update(read_only, SIGNER, persist="session", now=now).cookie is not None, "a session with a token"
    anonymous = restore(SIGNER, None, None, now=now)
    anonymous.context.observe(LIVE.at(60))
    assert update(anonymous, SIGNER, persist="session", now=now) == update(anonymous, SIGNER, persist="write", now=now)
    assert update(anonymous, SIGNER, persist="session", now=now).cookie is None, "no cookie for an anonymous read"
    read_only.context.record_write(LIVE.at(70), at=now)
    wrote = update(read_only, SIGNER, persist="write", now=now)
    assert wrote.cookie is not None and wrote.header == wrote.cookie, "a write answers in the header too"
