"""Write-behind's rules: queue settings, records and versions, flush plans, durability modes.

Driven by :mod:`readscale._async.writebehind.producer`; the public face is
:mod:`readscale.writebehind`.
"""
