"""Versioned, idempotent migrations of the matcher-owned tables (schema `canon` by default).

Each `migrations/NNNN_name.sql` runs once, in its own transaction, with the search_path set to
the canon schema; applied versions are recorded in `schema_migrations`. Concurrent callers are
serialized by an advisory lock, so two processes starting at once cannot both apply a file.
"""
from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x6D61746368  # "match"
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


def available() -> list[tuple[int, str, str]]:
    files = resources.files("matcher.migrations")
    found = []
    for entry in files.iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append((int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def applied(conn: psycopg.Connection, schema: str) -> set[int]:
    exists = conn.execute(
        "select 1 from information_schema.tables where table_schema = %s and table_name = 'schema_migrations'",
        (schema,),
    ).fetchone()
    if not exists:
        return set()
    rows = conn.execute(sql.SQL("select version from {}.schema_migrations").format(sql.Identifier(schema)))
    return {r[0] for r in rows}


def pending(conn: psycopg.Connection, schema: str) -> list[str]:
    """Migrations not applied to `schema` yet (read only)."""
    have = applied(conn, schema)
    return [f"{version:04d}_{name}" for version, name, _ in available() if version not in have]


def migrate(conn: psycopg.Connection, schema: str) -> list[str]:
    """Bring `schema` up to date; return the names of the migrations applied now."""
    done: list[str] = []
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "create table if not exists {}.schema_migrations ("
                " version integer primary key, name text not null,"
                " applied_at timestamptz not null default clock_timestamp())"
            ).format(sql.Identifier(schema))
        )
        have = applied(conn, schema)
        for version, name, body in available():
            if version in have:
                continue
            conn.execute(sql.SQL("set local search_path to {}, public").format(sql.Identifier(schema)))
            conn.execute(body)
            conn.execute(
                sql.SQL("insert into {}.schema_migrations (version, name) values (%s, %s)").format(
                    sql.Identifier(schema)
                ),
                (version, name),
            )
            log.info("applied migration %04d_%s to schema %s", version, name, schema)
            done.append(f"{version:04d}_{name}")
    return done
