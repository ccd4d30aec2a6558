"""What the harness tells a consistency service process to run: :class:`ServiceConfig`,
passed as JSON in ``READSCALE_CONSISTENCY_CONFIG``, and the connection parts the
process's ORMs are built from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["CONFIG_ENV", "SECRET_FIELD", "ServiceConfig", "pg_parts"]

CONFIG_ENV = "READSCALE_CONSISTENCY_CONFIG"
SECRET_FIELD = "secret"  # noqa: S105 - the name of a configuration field


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    port: int
    primary: str
    replicas: dict[str, str]
    table: str
    prefix: str
    secret: str
    redis_url: str
    bus_url: str | None  # None: no bus (sabotage), else the bus's Redis
    channel: str
    backend: str = "redis"  # redis | memcached | cluster
    memcached: str | None = None
    cluster_nodes: tuple[str, ...] = ()
    tombstone_ttl: float | None = None  # None: the library's default
    read_block_delay: float = 0.0
    load_work: float = 0.0  # a loader's own work after its read (rendering, computing), up to this
    wait_budget: float = 0.2
    sabotage: tuple[str, ...] = ()
    seed: int = 0
    #: Write-behind writes (``POST /wb``) go to this table's ``val`` through this queue
    #: (the harness runs the flusher); None: no write-behind.
    wb_table: str | None = None
    wb_queue: str = ""

    @classmethod
    def from_json(cls, text: str) -> ServiceConfig:
        data = json.loads(text)
        data["cluster_nodes"] = tuple(data.get("cluster_nodes") or ())
        data["sabotage"] = tuple(data.get("sabotage") or ())
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.__dict__ | {"cluster_nodes": list(self.cluster_nodes), "sabotage": list(self.sabotage)})


def pg_parts(dsn: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    return {
        "host": parts.get("host", "127.0.0.1"),
        "port": int(str(parts.get("port") or 5432)),
        "user": parts.get("user", "postgres"),
        "dbname": parts.get("dbname", "postgres"),
    }
