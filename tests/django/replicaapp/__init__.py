"""A minimal Django app for the replica router's Django test (run in a subprocess)."""
