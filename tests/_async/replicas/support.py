"""Support shared by the replica router tests (written async, generated to sync)."""

from __future__ import annotations

from readscale._async.replicas.router import AsyncReplicaRouter
from readscale._shared.primitives.locks import async_sleep


async def replayed_everywhere(router: AsyncReplicaRouter) -> None:
    """Wait until every replica has replayed the setup's writes (the router's own context)."""
    token = router.context.token
    assert token is not None
    for _ in range(1000):
        await router.poll()
        positions = [s.replay_lsn for s in router.status() if s.role == "replica"]
        if all(p is not None and p >= token.lsn for p in positions):
            return
        await async_sleep(0.01)
    raise AssertionError(f"replicas never replayed {token}: {router.status()}")
