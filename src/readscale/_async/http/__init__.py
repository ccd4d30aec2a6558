"""The HTTP layer's drivers: the response cache (``response_cache.py``)."""
