"""The CDC driver: the worker that turns committed changes into invalidations."""
