"""What both driver flavours use and that never awaits: the sync/async twins (locks,
single-flight, background tasks, TCP streams), context variables (the causal context, the
fill scope), state shared by a router's readers and observer, and counters. Rank
``shared`` (``scripts/check_layers.py``): imports only ``_core`` and ``errors``."""
