"""The replica router's rules: where a read goes (``routing``), replica health, the
causal token's rules, and the router's settings.

Driven by :mod:`readscale._async.replicas`; the public face is :mod:`readscale.replicas`.
"""
