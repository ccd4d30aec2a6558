"""The replica router's sync-neutral state: the causal context and the topology."""
