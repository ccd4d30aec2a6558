"""The backend contract suite, written async once; ``scripts/unasync.py`` generates ``readscale.testing._sync``."""
