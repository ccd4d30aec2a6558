"""Cache backends (async). Generated to ``readscale._sync.backends``."""
