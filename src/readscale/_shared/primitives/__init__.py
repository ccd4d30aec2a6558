"""The sync/async twins: locks and events, single-flight, background tasks."""
