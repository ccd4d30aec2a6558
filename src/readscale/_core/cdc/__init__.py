"""Change data capture's rules: which cache entries a row change invalidates.

Driven by :mod:`readscale._async.cdc.worker`; the public face is :mod:`readscale.cdc`.
"""
