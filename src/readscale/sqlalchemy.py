"""readscale for SQLAlchemy: sessions whose reads go to lag-aware replicas and whose
writes pin the transaction to the primary (see :mod:`readscale.replicas.sqlalchemy`)."""

from readscale.replicas.sqlalchemy import RoutingSession, async_routing_sessionmaker, routing_sessionmaker

__all__ = ["RoutingSession", "async_routing_sessionmaker", "routing_sessionmaker"]
