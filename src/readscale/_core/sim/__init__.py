"""A model of the layered read path: what each layer absorbs, for any traffic and settings.

Like Caffeine's simulator beside Caffeine, this lives beside the library: the cache,
edge and replica code decide per request; this predicts the aggregate. It is pure (no
I/O, clock or randomness) and every input and output is a frozen value.

Invariants
----------
- Shares are of *all* requests, reads and writes: each read is absorbed by exactly one
  layer (browser, edge, app cache, a replica or the primary) and each write by the
  primary, so the five shares are in [0, 1] and sum to 1.
- Monotone: a longer TTL or max-age, a bigger cache or a higher locality of one layer
  never lowers that layer's hit ratio nor raises the load it passes on; more replicas
  never raise the load per replica. Exact in steady state; in a cold run (see 8) a
  longer TTL on a full cache may cost up to 1e-4 of a layer's load, because Che's
  steady-state ``t_c`` is applied to a run shorter than the TTL.
- The same :class:`Scenario` always gives the same :class:`Prediction`.

Assumptions (each one a place where reality can differ; calibration absorbs the rest)
------------------------------------------------------------------------------------
1. Independent reference model: key ``i`` of N (rank 1 the most popular) is read as a
   Poisson process of rate ``reads * p_i``, ``p_i ~ i**-alpha`` (Zipf). Writes are
   Poisson too, ``writes * q_i`` with ``q_i ~ i**-write_alpha`` over the same ranking
   (default: the reads' skew, so every key has the same reads per write).
2. Every cache entry lives from its fill until its TTL (counted from the fill, not
   reset by hits), an invalidation (each write of the key, when that layer is
   invalidated on writes) or an LRU eviction at Che's characteristic time, whichever
   comes first. A key's hit ratio is ``x / (1 + x)``, ``x = rate * E[lifetime]``
   (:mod:`readscale._core.sim.caches`). References: H. Che, Y. Tung, Z. Wang,
   "Hierarchical Web caching systems: modeling, design and experimental results",
   IEEE JSAC 20(7), 2002 (the characteristic time); C. Fricker, P. Robert, J. Roberts,
   "A versatile and accurate approximation for LRU cache performance", ITC 24, 2012
   (why it holds for Zipf and for TTL caches); J. Jung, A. Berger, H. Balakrishnan,
   "Modeling TTL-based Internet caches", INFOCOM 2003 (non-reset TTL caches).
3. The misses of one layer reach the next as a Poisson stream of the same per-key rate
   (the standard approximation for networks of caches; Fricker et al. 2012 and
   N. C. Fofack, P. Nain, G. Neglia, D. Towsley, "Analysis of TTL-based cache
   networks", VALUETOOLS 2012, find it accurate).
4. Browsers: each client has its own private cache, no size limit, TTL = max-age, fed
   only by its own requests (``reads / clients`` per second, the same Zipf). Writes do
   not reach it (max-age is a promise to serve until expiry); a revalidation
   (If-None-Match after max-age) passes the browser like any miss.
5. Edge: one shared TTL cache, no size limit, for the ``public_share`` of reads on
   public routes (the rest is private and passes); purged on each write of the key
   when ``edge_purge``. Grace, stale-while-revalidate and request coalescing are not
   modelled: they only add hits.
6. App cache: an L1 per app process (``l1_entries`` each, traffic spread evenly over
   ``app_processes``) in front of a shared L2 (``l2_entries``, None = unbounded), both
   with the cache TTL and both invalidated on writes. L1 is modelled as LRU; the
   package's W-TinyLFU does better (baselines.md: +0.05 to +0.10 hit ratio at 1 %), so
   the L1 prediction is a floor.
7. Database: reads that miss every cache go to the replicas, spread evenly, except the
   reads read-your-writes sends to the primary. A client writes as a Poisson process
   of rate ``writes / clients``; after its write, its reads go to the primary for the
   replica lag (rule ``"lsn"``: a replica behind the client's LSN token is skipped) or
   for a fixed window (rule ``"window"``), so that share is
   ``1 - exp(-writes / clients * duration)``. With no replica, every read goes to the
   primary. Writes bypass every cache and all go to the primary.
8. Runs (``duration_s``) start with every cache cold; the expected misses per key come
   from renewal theory with the lifetime at its mean (exact while a run spans at most
   24 lifetimes, the renewal asymptote beyond). Che's ``t_c`` is the steady-state one.
9. Latency per layer is a constant (inputs, defaults measured on this machine in
   shared/notes/baselines.md); there is no queueing, so near saturation the latency
   is optimistic. The overall latency is the share-weighted mean.

Checks: Che's approximation here gives LRU hit ratios within 0.2 % of the traces in
baselines.md (Zipf 0.99 and 0.8, 1 % and 10 % caches), and a Monte Carlo of LRU+TTL
caches with invalidations and cold starts agrees within about 1 %.
"""

from readscale._core.sim.funnel import predict
from readscale._core.sim.model import (
    LAYERS,
    Latencies,
    LayerLoad,
    Layers,
    Locality,
    Prediction,
    Scenario,
    Traffic,
)

__all__ = [
    "LAYERS",
    "Latencies",
    "LayerLoad",
    "Layers",
    "Locality",
    "Prediction",
    "Scenario",
    "Traffic",
    "predict",
]
