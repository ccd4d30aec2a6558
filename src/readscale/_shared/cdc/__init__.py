"""The CDC worker's counters, shared by the async and sync worker."""
