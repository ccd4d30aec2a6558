"""PostgreSQL for the local stack: a primary and N streaming replicas.

Facts this relies on (shared/notes/verified-postgres.md, measured on PostgreSQL 15):
- ``pg_basebackup -R`` writes ``standby.signal`` and ``primary_conninfo``; the
  ``application_name`` given in its connection string is the name that
  ``synchronous_standby_names`` matches (``r1``, ``r2``, ...).
- ``pg_wal_replay_pause()`` stops replay while WAL keeps arriving (receive LSN moves,
  replay LSN does not); a pause does not survive a restart.
- ``recovery_min_apply_delay`` takes effect on reload, also for a commit already waiting.
- ``FIRST 1 (r1)`` with r1 down makes commits wait; ``ANY 1 (r1, r2)`` with one down
  does not. Synchronous names are set only once every replica streams, so the setup
  itself never waits on a standby.
- PostgreSQL refuses to run as root: the servers and their tools run as the stack's
  server user (see ``_proc.server_user``).
- Secured on request (``tls=True``, an application role): ``ssl = on`` with a server
  certificate from ``readscale.stack.tls`` (for 127.0.0.1, signed by the stack's CA),
  and a login role with a SCRAM password that ``pg_hba.conf`` admits over TLS only
  (``hostssl ... scram-sha-256``, ``hostnossl ... reject``). The superuser keeps its
  local ``trust`` entry: the stack's own tools and the replicas' streaming use it.
  Replicas are cloned with the primary's configuration, so they are secured alike.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any, Literal

from readscale.errors import ConfigurationError, StackError
from readscale.stack import _proc
from readscale.stack._node import Node, NodeSpec
from readscale.stack._proc import ServerUser
from readscale.stack.tls import TlsFiles

ReplicationMode = Literal["async", "sync", "semi-sync"]
REPLICATION_MODES: tuple[ReplicationMode, ...] = ("async", "sync", "semi-sync")
SUPERUSER = "postgres"
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def base_settings(*, fsync: bool) -> dict[str, str]:
    return {
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": "''",
        "wal_level": "logical",
        "max_wal_senders": "16",
        "max_replication_slots": "16",
        "hot_standby": "on",
        "hot_standby_feedback": "on",
        "wal_receiver_status_interval": "1s",
        # Replicas use no slots; keep enough WAL that a paused or stopped one catches up.
        "wal_keep_size": "'512MB'",
        "max_slot_wal_keep_size": "'1GB'",
        "max_connections": "300",
        "shared_buffers": "'128MB'",
        "fsync": "on" if fsync else "off",
        "synchronous_commit": "on",
        "track_commit_timestamp": "on",
        # Per-statement counts on every node: the demo measures what each node served.
        "shared_preload_libraries": "'pg_stat_statements'",
        "pg_stat_statements.track": "top",
        "logging_collector": "off",
        "log_min_messages": "warning",
        "log_line_prefix": "'%m [%p] '",
    }


def synchronous_standby_names(mode: ReplicationMode, replicas: list[str]) -> str:
    """The setting for a replication mode: sync waits for r1, semi-sync for any one standby."""
    if mode == "async":
        return ""
    if not replicas:
        raise ConfigurationError(f"replication mode {mode!r} needs at least one replica")
    if mode == "sync":
        return f"FIRST 1 ({replicas[0]})"
    return f"ANY 1 ({', '.join(replicas)})"


class PostgresNode(Node):
    """A postgres server. ``extra``: ``role`` (primary or replica), ``application_name``."""

    kind = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: roll back sessions, checkpoint, exit
    runs_as_server_user = True
    start_timeout = 60.0

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def role(self) -> str:
        return str(self.spec.extra.get("role", "primary"))

    @property
    def dsn(self) -> str:
        """The superuser's DSN (no password: ``trust`` on loopback, for the stack's tools and tests)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def ca_file(self) -> str | None:
        """The CA that signed the server certificate, when the node runs with TLS."""
        tls = self.spec.extra.get("tls")
        return str(tls["ca"]) if tls else None

    @property
    def app_user(self) -> str | None:
        """The password-protected application role, if the stack made one."""
        user = self.spec.extra.get("app_user")
        return str(user) if user else None

    @property
    def app_dsn(self) -> str | None:
        """The application role's DSN without its password (give that separately, e.g.
        through ``PostgresSettings``): ``sslmode=verify-full`` with the stack's CA under TLS."""
        if not self.app_user:
            return None
        dsn = f"postgresql://{self.app_user}@127.0.0.1:{self.port}/postgres"
        if self.ca_file:
            dsn += f"?sslmode=verify-full&sslrootcert={self.ca_file}"
        return dsn

    def argv(self) -> list[str]:
        return [_proc.find_binary("postgres"), "-D", str(self.data_dir), "-p", str(self.port)]

    def probe(self) -> bool:
        proc = _proc.run(
            [
                _proc.find_binary("pg_isready"),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-t",
                "1",
            ],
            check=False,
            timeout=5,
        )
        return proc.returncode == 0

    def endpoint(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "port": self.port,
            "dsn": self.dsn,
            "role": self.role,
        }
        if self.role == "replica":
            info["application_name"] = self.spec.extra.get("application_name", self.name)
        if self.ca_file:
            info["ca_file"] = self.ca_file
        if self.app_dsn:
            info["app_dsn"] = self.app_dsn
        return info

    def sql(self, *statements: str, timeout: float = 30.0) -> str:
        """Run statements through psql (each in its own transaction); return the last output."""
        argv = [
            _proc.find_binary("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
        ]  # fmt: skip
        for statement in statements:
            argv += ["-c", statement]
        return _proc.run(argv, timeout=timeout).stdout.strip()

    # -- fault injection (replicas) -------------------------------------------------------

    def _require_replica(self, action: str) -> None:
        if self.role != "replica":
            raise StackError(f"cannot {action} on {self.name}: it is the primary, not a replica")

    def pause_replay(self) -> None:
        """Stop applying WAL (it keeps arriving), so this replica's lag grows on demand."""
        self._require_replica("pause replay")
        self.sql("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self._require_replica("resume replay")
        self.sql("SELECT pg_wal_replay_resume()")

    def is_replay_paused(self) -> bool:
        self._require_replica("read the replay state")
        return self.sql("SELECT pg_get_wal_replay_pause_state()") != "not paused"

    def set_apply_delay(self, seconds: float) -> None:
        """Hold each commit back ``seconds`` after the primary made it (``recovery_min_apply_delay``)."""
        self._require_replica("set an apply delay")
        if seconds < 0:
            raise ConfigurationError(f"apply delay must be >= 0 seconds, got {seconds}")
        millis = round(seconds * 1000)
        self.sql(f"ALTER SYSTEM SET recovery_min_apply_delay = '{millis}ms'", "SELECT pg_reload_conf()")

    def replay_lsn(self) -> str:
        self._require_replica("read the replay position")
        return self.sql("SELECT pg_last_wal_replay_lsn()")

    def current_lsn(self) -> str:
        return self.sql("SELECT pg_current_wal_lsn()")


def new_postgres(name: str, root: Path, port: int, role: str, user: ServerUser, **extra: Any) -> PostgresNode:
    node_dir = root / name
    node_dir.mkdir(parents=True, exist_ok=True)
    _proc.chown_tree(node_dir, user)
    spec = NodeSpec(
        name=name, kind="postgres", port=port, dir=str(node_dir), log=str(node_dir / "server.log"),
        extra={"role": role, **extra},
    )  # fmt: skip
    return PostgresNode(spec, user)


def init_primary(
    node: PostgresNode, *, fsync: bool, tls: TlsFiles | None = None, app_user: tuple[str, str] | None = None
) -> None:
    """initdb a fresh data folder and write the stack's settings into it.

    ``tls``: turn SSL on with these files. ``app_user``: ``(role, password)`` of a login
    role that ``pg_hba.conf`` admits only with SCRAM (and only over TLS when ``tls``);
    the role itself is created once the server runs (:func:`create_app_role`).
    """
    user = node.user
    assert user is not None
    _proc.run(
        [
            _proc.find_binary("initdb"), "-D", str(node.data_dir), "-U", SUPERUSER, "-A", "trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        ],
        user=user, cwd=node.dir, timeout=120,
    )  # fmt: skip
    settings = base_settings(fsync=fsync)
    described = _proc.run([_proc.find_binary("postgres"), "--describe-config"], user=user, cwd=node.dir).stdout
    if "output_plugin_libraries" in described:
        # Recent minor releases only let listed libraries be logical decoding plugins;
        # the CDC worker uses wal2json.
        settings["output_plugin_libraries"] = "'pgoutput, test_decoding, wal2json'"
    if tls is not None:
        settings.update(
            ssl="on",
            ssl_cert_file=f"'{tls.cert}'",
            ssl_key_file=f"'{tls.key}'",
            ssl_ca_file=f"'{tls.ca}'",
            ssl_min_protocol_version="'TLSv1.2'",
            password_encryption="'scram-sha-256'",  # noqa: S106 - the hashing scheme, not a password
        )
    conf = node.data_dir / "postgresql.conf"
    with open(conf, "a", encoding="utf-8") as fh:
        fh.write("\n# readscale local stack\n")
        for key, value in settings.items():
            fh.write(f"{key} = {value}\n")
    if app_user is not None:
        hba = node.data_dir / "pg_hba.conf"
        hba.write_text(hba_lines(app_user[0], tls=tls is not None) + hba.read_text())
        node.spec.extra["app_user"] = app_user[0]
    if tls is not None:
        node.spec.extra["tls"] = {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}


def check_role_name(name: str) -> str:
    if not _ROLE_NAME.fullmatch(name) or name == SUPERUSER:
        raise ConfigurationError(
            f"the application role must be a lower-case SQL identifier other than {SUPERUSER!r}, got {name!r}"
        )
    return name


def hba_lines(user: str, *, tls: bool) -> str:
    """pg_hba.conf entries (first match wins, so they go on top) for the application role."""
    check_role_name(user)
    if not tls:
        return (
            "# readscale stack: the application role, with its password\n"
            f"host all {user} 127.0.0.1/32 scram-sha-256\n"
            f"host all {user} ::1/128 scram-sha-256\n"
        )
    return (
        "# readscale stack: the application role over TLS only, with its password\n"
        f"hostssl all {user} 127.0.0.1/32 scram-sha-256\n"
        f"hostssl all {user} ::1/128 scram-sha-256\n"
        f"hostnossl all {user} 0.0.0.0/0 reject\n"
        f"hostnossl all {user} ::/0 reject\n"
    )


def create_app_role(primary: PostgresNode, user: str, password: str) -> None:
    """Create the application role on a running primary (replicas get it by replication).

    It may create tables in ``public`` and, with ``REPLICATION``, use the logical slot
    functions the CDC worker reads. Nothing more: the replica router's probes (WAL
    positions, system identifier, timeline) are open to every role, and the tests show
    it works with this one. The statement goes to psql on its standard input, so the
    password is never on a command line.
    """
    check_role_name(user)
    if not password or "\x00" in password:
        raise ConfigurationError(f"the application role {user!r} needs a non-empty password without NUL")
    literal = "'" + password.replace("'", "''") + "'"
    statements = [
        f"CREATE ROLE {user} LOGIN REPLICATION PASSWORD {literal};",
        f"GRANT CREATE, USAGE ON SCHEMA public TO {user};",
    ]
    script = "\n".join(statements) + "\n"
    argv = [
        _proc.find_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
        "-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER, "-d", "postgres",
    ]  # fmt: skip
    _proc.run(argv, input_text=script, timeout=30)


def clone_replica(primary: PostgresNode, replica: PostgresNode) -> None:
    """pg_basebackup -R from the primary into the replica's data folder."""
    user = replica.user
    assert user is not None
    app = replica.spec.extra.get("application_name", replica.name)
    conninfo = f"host=127.0.0.1 port={primary.port} user={SUPERUSER} application_name={app}"
    _proc.run(
        [
            _proc.find_binary("pg_basebackup"), "-d", conninfo, "-D", str(replica.data_dir),
            "-R", "-X", "stream", "-c", "fast", "--no-sync",
        ],
        user=user, cwd=replica.dir, timeout=300,
    )  # fmt: skip
    os.chmod(replica.data_dir, 0o700)


def wait_streaming(primary: PostgresNode, names: list[str], timeout: float = 60.0) -> None:
    if not names:
        return
    wanted = ", ".join(f"'{n}'" for n in names)
    # Names are the stack's own r1, r2, ...: no outside input reaches this SQL.
    query = f"SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name IN ({wanted})"  # noqa: S608
    _proc.wait_until(
        lambda: primary.sql(query) == str(len(names)),
        timeout=timeout,
        what=f"replicas {', '.join(names)} to stream from the primary",
        interval=0.02,
    )


def set_replication_mode(primary: PostgresNode, mode: ReplicationMode, replicas: list[str]) -> None:
    value = synchronous_standby_names(mode, replicas)
    primary.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{value}'", "SELECT pg_reload_conf()")
    expected = {name: expected_sync_state(mode, i) for i, name in enumerate(replicas)}
    wanted = ",".join(f"{name}={state}" for name, state in sorted(expected.items()))
    query = (
        "SELECT string_agg(application_name || '=' || sync_state, ',' ORDER BY application_name) "
        "FROM pg_stat_replication"
    )
    _proc.wait_until(
        lambda: primary.sql(query) == wanted,
        timeout=30,
        what=f"the standbys to report {wanted}",
    )


def expected_sync_state(mode: ReplicationMode, index: int) -> str:
    """What ``pg_stat_replication.sync_state`` shows for the index-th replica in a mode."""
    if mode == "semi-sync":
        return "quorum"
    if mode == "sync" and index == 0:
        return "sync"
    return "async"
