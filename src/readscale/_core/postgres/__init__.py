"""PostgreSQL facts every feature shares: WAL positions (LSNs) and connection strings."""
