"""Least-privilege roles: who may read and write what (docs/reliability.md).

Three group roles (NOLOGIN), named `<role_prefix>_<kind>` (`fleet_` by default):

- `fleet_dbt_builder`: reads the raw schema, owns the dbt schemas (`staging`, `intermediate`,
  the identity schema, `ops`) and everything in them, reads the canon tables (dbt sources)
  but cannot write them.
- `fleet_matcher_writer`: owns the canon schema and all its objects; reads the matcher's
  input (the identity tables) and the ops views its queue sync reads. No access to raw, no
  CREATE in any dbt schema.
- `fleet_ops_reader`: USAGE on `ops` and SELECT on its views. The views run with their
  owner's rights (the builder), so the reader needs nothing on canon or raw.

dbt recreates its relations on every build, which drops their grants. Default privileges
(`ALTER DEFAULT PRIVILEGES FOR ROLE fleet_dbt_builder IN SCHEMA ...`) give the relations the
builder creates the right grants at birth; they apply to objects created *as* the group role,
so the LOGIN users made with `login_prefix` get `ALTER ROLE ... SET role` to their group: what
they create is owned by the group, whoever logged in.

Everything runs in one transaction and converges (grants are granted, stray write grants
revoked), so applying it twice changes nothing. Passwords are hashed on the client
(libpq's `PQencryptPasswordConn`): the server log never sees them, nor does the report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
from psycopg import sql

from matcher.config import Config
from matcher.errors import MatcherError

# dbt schemas fixed by dbt_project.yml (+schema per folder); the identity schema is configurable.
DBT_FIXED_SCHEMAS = ("staging", "intermediate", "ops")
OPS_SCHEMA = "ops"
# The ops views the matcher reads to keep the red-KPI state and the queue (matcher/backlog.py).
MATCHER_OPS_VIEWS = ("ops_kpi_red_lead_history", "ops_kpi_red_lead_inputs", "ops_kpi_red_lead_history_scoped",
                     "ops_kpi_red_lead_record_loads", "ops_kpi_red_lead_claims")
# The matcher's input, built by dbt (runner.CANDIDATE_CONTRACT).
MATCHER_INPUT_TABLES = ("identity_candidates", "identity_records", "identity_pending_records")

# relkinds whose ownership is transferred explicitly; indexes and owned sequences follow their table
_ALTER_BY_RELKIND = {"r": "table", "p": "table", "f": "foreign table", "v": "view", "m": "materialized view",
                     "S": "sequence"}


class RolesError(MatcherError):
    """The connected user cannot create the roles or hand over the schemas."""

    exit_code = 1


@dataclass(frozen=True)
class RoleNames:
    builder: str
    writer: str
    reader: str

    @classmethod
    def for_prefix(cls, prefix: str) -> RoleNames:
        return cls(builder=f"{prefix}_dbt_builder", writer=f"{prefix}_matcher_writer", reader=f"{prefix}_ops_reader")


# login suffix -> (group attribute, password variable)
LOGINS = (("dbt", "builder", "MATCHER_DBT_PASSWORD"),
          ("matcher", "writer", "MATCHER_MATCHER_PASSWORD"),
          ("ops", "reader", "MATCHER_OPS_PASSWORD"))


def apply_roles(conn: psycopg.Connection, config: Config, *, login_prefix: str | None = None,
                role_prefix: str = "fleet") -> list[str]:
    """Create or update the three group roles (and LOGIN users) with their grants; return a report.

    Needs a superuser, or a user with CREATEROLE that is a member of the roles owning the
    schemas. Idempotent: a second call finds everything in place and changes nothing.
    """
    names = RoleNames.for_prefix(role_prefix)
    with conn.transaction():
        _check_caller(conn)
        try:
            report = _apply(conn, config, names, login_prefix)
        except psycopg.errors.InsufficientPrivilege as exc:
            user = conn.info.user
            raise RolesError(
                f"user {user} may not set up the roles ({exc.diag.message_primary}); "
                "run `matcher roles` as a superuser or as the owner of the schemas with CREATEROLE"
            ) from exc
    return report


def _check_caller(conn: psycopg.Connection) -> None:
    superuser, createrole = conn.execute(
        "select rolsuper, rolcreaterole from pg_roles where rolname = current_user").fetchone()
    if not (superuser or createrole):
        raise RolesError(
            f"user {conn.info.user} cannot create roles: run `matcher roles` as a superuser or a user with CREATEROLE")


def _apply(conn: psycopg.Connection, cfg: Config, names: RoleNames, login_prefix: str | None) -> list[str]:
    ident = sql.Identifier
    builder, writer, reader = ident(names.builder), ident(names.writer), ident(names.reader)
    raw, canon = cfg.raw_schema, cfg.canon_schema
    dbt_schemas = (DBT_FIXED_SCHEMAS[0], DBT_FIXED_SCHEMAS[1], cfg.identity_schema, OPS_SCHEMA)
    report: list[str] = []

    def run(statement: sql.Composable) -> None:
        conn.execute(statement)

    # -- roles
    for name in (names.builder, names.writer, names.reader):
        created = _ensure_role(conn, name, login=False)
        report.append(f"role {name}: {'created' if created else 'exists'} (NOLOGIN)")
    db = ident(conn.info.dbname)
    # the builder and the matcher use temp tables; the reader only reads views
    run(sql.SQL("grant connect, temporary on database {} to {}, {}").format(db, builder, writer))
    run(sql.SQL("grant connect on database {} to {}").format(db, reader))

    # -- dbt builder: owns the dbt schemas and everything in them
    for schema in dbt_schemas:
        run(sql.SQL("create schema if not exists {}").format(ident(schema)))
        run(sql.SQL("alter schema {} owner to {}").format(ident(schema), builder))
        moved = _transfer_ownership(conn, schema, names.builder)
        report.append(f"schema {schema}: owned by {names.builder}" + (f", {moved} objects handed over" if moved else ""))
        for other in (writer, reader):
            # only the owner creates in a dbt schema; the others get USAGE where they read
            run(sql.SQL("revoke create on schema {} from {}").format(ident(schema), other))

    # reads raw, now and for tables created later by whoever creates them
    if _schema_exists(conn, raw):
        run(sql.SQL("grant usage on schema {} to {}").format(ident(raw), builder))
        run(sql.SQL("grant select on all tables in schema {} to {}").format(ident(raw), builder))
        for owner in _raw_creators(conn, raw, names):
            run(sql.SQL("alter default privileges for role {} in schema {} grant select on tables to {}").format(
                ident(owner), ident(raw), builder))
        report.append(f"schema {raw}: {names.builder} may read (USAGE, SELECT on all tables, default privileges)")
    else:
        report.append(f"schema {raw}: missing, no grants (run `matcher roles` again once the raw tables exist)")
    for other in (writer, reader):
        _revoke_everything_in(conn, raw, other)

    # -- matcher writer: owns canon
    run(sql.SQL("create schema if not exists {}").format(ident(canon)))
    run(sql.SQL("alter schema {} owner to {}").format(ident(canon), writer))
    moved = _transfer_ownership(conn, canon, names.writer)
    report.append(f"schema {canon}: owned by {names.writer}" + (f", {moved} objects handed over" if moved else ""))
    # The matcher runs `create schema if not exists <canon>` on every start (matcher/migrate.py),
    # which Postgres checks against CREATE on the database even when the schema exists.
    run(sql.SQL("grant create on database {} to {}").format(db, writer))

    # builder reads canon (dbt sources), never writes it; new canon tables readable at birth
    run(sql.SQL("grant usage on schema {} to {}").format(ident(canon), builder))
    run(sql.SQL("revoke create on schema {} from {}").format(ident(canon), builder))
    run(sql.SQL("revoke insert, update, delete, truncate, references, trigger on all tables in schema {} from {}").format(
        ident(canon), builder))
    run(sql.SQL("grant select on all tables in schema {} to {}").format(ident(canon), builder))
    run(sql.SQL("alter default privileges for role {} in schema {} grant select on tables to {}").format(
        writer, ident(canon), builder))
    report.append(f"schema {canon}: {names.builder} may read (dbt sources), not write")
    _revoke_everything_in(conn, canon, reader)

    # writer reads its input (identity schema) and the ops views its queue sync reads
    identity = ident(cfg.identity_schema)
    run(sql.SQL("grant usage on schema {} to {}").format(identity, writer))
    for table in MATCHER_INPUT_TABLES:
        if _relation_exists(conn, cfg.identity_schema, table):
            run(sql.SQL("grant select on {} to {}").format(ident(cfg.identity_schema, table), writer))
    run(sql.SQL("alter default privileges for role {} in schema {} grant select on tables to {}").format(
        builder, identity, writer))
    report.append(f"schema {cfg.identity_schema}: {names.writer} may read {', '.join(MATCHER_INPUT_TABLES)}")

    # ops: the reader reads every view, the writer reads views too (see below)
    ops = ident(OPS_SCHEMA)
    run(sql.SQL("grant usage on schema {} to {}, {}").format(ops, reader, writer))
    run(sql.SQL("grant select on all tables in schema {} to {}").format(ops, reader))
    for view in MATCHER_OPS_VIEWS:
        if _relation_exists(conn, OPS_SCHEMA, view):
            run(sql.SQL("grant select on {} to {}").format(ident(OPS_SCHEMA, view), writer))
    # Default privileges are per schema, not per relation: after the next dbt build the writer
    # can read every ops view, not only the ones it needs. The ops views hold keys, dates,
    # reasons and counts, no personal data; see docs/reliability.md.
    run(sql.SQL("alter default privileges for role {} in schema {} grant select on tables to {}, {}").format(
        builder, ops, reader, writer))
    report.append(f"schema {OPS_SCHEMA}: {names.reader} may read every view; "
                  f"{names.writer} may read {', '.join(MATCHER_OPS_VIEWS)} (and views created by later builds)")
    # never: writer and reader in staging/intermediate (normalized personal data)
    for schema in DBT_FIXED_SCHEMAS[:2]:
        for other in (writer, reader):
            _revoke_everything_in(conn, schema, other)
    _revoke_everything_in(conn, cfg.identity_schema, reader)

    # -- LOGIN users
    if login_prefix:
        for suffix, attr, env_var in LOGINS:
            group = getattr(names, attr)
            report.append(_ensure_login(conn, f"{login_prefix}_{suffix}", group, env_var))
    return report


# ------------------------------------------------------------------------ helpers

def _ensure_role(conn: psycopg.Connection, name: str, *, login: bool) -> bool:
    exists = conn.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone()
    option = sql.SQL("login" if login else "nologin")
    if exists:
        conn.execute(sql.SQL("alter role {} {}").format(sql.Identifier(name), option))
        return False
    conn.execute(sql.SQL("create role {} {}").format(sql.Identifier(name), option))
    return True


def _ensure_login(conn: psycopg.Connection, login: str, group: str, env_var: str) -> str:
    created = _ensure_role(conn, login, login=True)
    user, grp = sql.Identifier(login), sql.Identifier(group)
    member = conn.execute("select pg_has_role(%s, %s, 'member')", (login, group)).fetchone()[0]
    if not member:
        conn.execute(sql.SQL("grant {} to {}").format(grp, user))
    # Sessions start as the group role, so what this user creates belongs to the group and
    # gets the group's default privileges.
    conn.execute(sql.SQL("alter role {} set role = {}").format(user, sql.Literal(group)))
    password = os.environ.get(env_var)
    if password:
        hashed = conn.pgconn.encrypt_password(password.encode(), login.encode())
        conn.execute(sql.SQL("alter role {} password {}").format(user, sql.Literal(hashed.decode())))
        how = f"password set from {env_var}"
    elif created:
        how = f"no password ({env_var} not set)"
    else:
        how = f"password unchanged ({env_var} not set)"
    return f"login {login}: {'created' if created else 'exists'}, member of {group}, {how}"


def _schema_exists(conn: psycopg.Connection, schema: str) -> bool:
    return conn.execute("select to_regnamespace(%s) is not null", (sql.Identifier(schema).as_string(conn),)).fetchone()[0]


def _relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null",
                        (sql.Identifier(schema, name).as_string(conn),)).fetchone()[0]


def _transfer_ownership(conn: psycopg.Connection, schema: str, owner: str) -> int:
    """Make `owner` own every relation and routine of `schema`; return how many changed hands."""
    relations = conn.execute(
        "select c.relname, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relkind = any(%s) and c.relowner <> to_regrole(%s)"
        # sequences of identity/serial columns follow their table
        " and not (c.relkind = 'S' and exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass"
        "   and d.objid = c.oid and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')))"
        " order by c.relkind, c.relname",
        (schema, list(_ALTER_BY_RELKIND), sql.Identifier(owner).as_string(conn)),
    ).fetchall()
    for name, kind in relations:
        conn.execute(sql.SQL("alter {} {} owner to {}").format(
            sql.SQL(_ALTER_BY_RELKIND[kind]), sql.Identifier(schema, name), sql.Identifier(owner)))
    routines = conn.execute(
        "select p.proname, pg_get_function_identity_arguments(p.oid) from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = %s and p.proowner <> to_regrole(%s)"
        " and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid"
        "   and d.deptype = 'e')",
        (schema, sql.Identifier(owner).as_string(conn)),
    ).fetchall()
    for name, args in routines:
        # args come from Postgres' own rendering of the signature (types, already quoted)
        conn.execute(sql.SQL("alter routine {}({}) owner to {}").format(
            sql.Identifier(schema, name), sql.SQL(args), sql.Identifier(owner)))
    return len(relations) + len(routines)


def _raw_creators(conn: psycopg.Connection, schema: str, names: RoleNames) -> list[str]:
    """Roles that own or may create raw tables and for which the caller may set default privileges."""
    rows = conn.execute(
        "select distinct r.rolname from pg_roles r where r.rolname not like 'pg\\_%%'"
        " and r.rolname <> all(%s)"
        " and (r.rolname = current_user"
        "      or r.oid = (select nspowner from pg_namespace where nspname = %s)"
        "      or r.oid in (select c.relowner from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        "                   where n.nspname = %s and c.relkind in ('r', 'p', 'v', 'm', 'f')))"
        " and pg_has_role(current_user, r.oid, 'usage')"
        " order by 1",
        ([names.builder, names.writer, names.reader], schema, schema),
    ).fetchall()
    return [r for (r,) in rows]


def _revoke_everything_in(conn: psycopg.Connection, schema: str, role: sql.Identifier) -> None:
    """Take back any grant `role` holds in `schema` (converge: someone may have granted by hand)."""
    if not _schema_exists(conn, schema):
        return
    s = sql.Identifier(schema)
    conn.execute(sql.SQL("revoke all on schema {} from {}").format(s, role))
    conn.execute(sql.SQL("revoke all on all tables in schema {} from {}").format(s, role))
    conn.execute(sql.SQL("revoke all on all sequences in schema {} from {}").format(s, role))
