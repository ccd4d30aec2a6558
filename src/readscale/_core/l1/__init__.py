"""The in-process tier's rules: W-TinyLFU admission (count-min sketch, window, hill
climber). The tier itself is :mod:`readscale.l1` (synchronous, O(1): it needs no driver).
"""
