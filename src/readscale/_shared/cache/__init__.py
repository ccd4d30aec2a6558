"""The cache's sync-neutral parts: the fill scope, the tombstone life, the counters."""
