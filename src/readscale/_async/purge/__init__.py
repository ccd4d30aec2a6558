"""The edge purgers and the after-commit purge queue."""
