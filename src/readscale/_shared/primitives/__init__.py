"""The few things that truly differ between sync and async code, written as twins.

Drivers are written once, async, under ``readscale._async``; ``scripts/unasync.py``
turns ``AsyncLock`` into ``Lock``, ``async_sleep`` into ``sync_sleep`` and so on, so each
async name here has a sync twin with the same behaviour. One behavioural suite
(``tests/_async/test_primitives.py``, generated to ``tests/_sync``) holds both to it.

- ``locks``: sleep, Lock, Semaphore, Event: thin wrappers with one API (``wait`` takes a timeout and says whether
  the event was set).
- ``flight``: SingleFlight: concurrent callers of one key share one call of the function. The call
  runs on its own (an asyncio task, or the first caller's thread), so a caller that gives
  up or is cancelled does not cancel the work the others wait for.
- ``tasks``: Daemon, Background: at most one background job per key (a stale-while-revalidate refresh),
  errors logged, never raised into a reader; fan_out: calls run concurrently (tasks, or
  threads), results in order (an edge purge fanned out to every node).
"""
