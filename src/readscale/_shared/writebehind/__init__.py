"""Write-behind counters, shared by the async and sync producer and flusher."""
