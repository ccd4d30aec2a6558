"""The cache's driver: the façade, its tiers, versions and fills, the decorator, the invalidation bus."""
