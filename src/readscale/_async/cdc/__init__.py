"""The CDC driver: the worker that turns committed changes into invalidations."""

from readscale._shared.lazy import require

# It reads PostgreSQL's logical replication: without psycopg, one line naming the extra.
require("readscale.cdc", "psycopg")
