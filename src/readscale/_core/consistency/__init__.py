"""Checking reads against readscale's guarantees: the sampled checker a service runs
(``sampled``) and the exact checker of a recorded history (``history``).
"""
