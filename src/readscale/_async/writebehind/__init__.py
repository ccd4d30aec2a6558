"""The write-behind driver: the producer, the queue, the flusher and the PostgreSQL writer."""
