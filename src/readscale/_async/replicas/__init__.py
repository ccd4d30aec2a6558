"""The replica router's driver: the router, its nodes, the observer and the primary."""
