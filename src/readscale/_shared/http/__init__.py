"""Parts of the HTTP layer's drivers that both flavours share (the response cache's counters)."""
