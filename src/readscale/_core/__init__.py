"""readscale's pure policy core.

Every decision and all arithmetic of the read path lives here, with no I/O, no clock and
no randomness: ``now`` and ``rng`` are arguments, and results are frozen values or typed
states that the drivers carry out. ``scripts/check_layers.py`` enforces this.
"""
