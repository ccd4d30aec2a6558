"""The async drivers. ``scripts/unasync.py`` generates ``readscale._sync`` from this package."""
