"""Filling empty canon tables before indexing them, in the caller's transaction.

A row inserted into a table with indexes and foreign keys updates every index and checks every
foreign key, one row at a time; the same rows loaded into the bare table and indexed afterwards
cost a fraction of that (what pg_restore does). Two writers do it: the first refresh of the
red-KPI state (matcher/backlog.py) and a first matcher run (matcher/runner.py), each for the
tables it finds empty. The indexes and foreign keys are dropped and built again in the same
transaction, so a run that dies half-way leaves the tables as they were, indexes included.
"""
from __future__ import annotations

import logging

import psycopg
from psycopg import sql

# Every index of the tables named but those a foreign key references, with how to drop it and
# build it again: one that backs a primary key or unique constraint as that constraint.
_REBUILDABLE_INDEXES = """
select t.relname, ix.relname, pg_get_indexdef(i.indexrelid), con.conname, pg_get_constraintdef(con.oid),
    con.contype = 'p'
from pg_index i
join pg_class ix on ix.oid = i.indexrelid
join pg_class t on t.oid = i.indrelid
join pg_namespace n on n.oid = t.relnamespace
left join pg_constraint con on con.conindid = i.indexrelid and con.conrelid = i.indrelid and con.contype in ('p', 'u')
where n.nspname = %s and t.relname = any(%s)
    and not exists (select 1 from pg_constraint f where f.contype = 'f' and f.conindid = i.indexrelid)
order by t.relname, ix.relname
"""

# The foreign keys of the tables named: checked once for all rows when added again, instead of
# by a lookup per row written.
_FOREIGN_KEYS = """
select t.relname, con.conname, pg_get_constraintdef(con.oid)
from pg_constraint con
join pg_class t on t.oid = con.conrelid
join pg_namespace n on n.oid = t.relnamespace
where con.contype = 'f' and n.nspname = %s and t.relname = any(%s)
order by t.relname, con.conname
"""


def unindex_empty(conn: psycopg.Connection, schema: str, tables: tuple[str, ...], *, what: str,
                  logger: logging.Logger, keep_primary_keys: bool = False) -> tuple[frozenset[str], list[sql.Composable]]:
    """Drop the indexes and foreign keys of those of `tables` that are empty, in the caller's
    transaction; return those tables and the statements that build them again once the rows
    are in (to be run in the same transaction). `keep_primary_keys`: leave primary keys in
    place (an upsert into the table names one as its arbiter). `what` names the writer in what
    `logger` says.

    Dropping an index locks its table (access exclusive) until the transaction ends: a reader
    then waits for the writer, where it would have read an empty table. The lock is only taken
    when nobody holds one on those tables (nowait); otherwise, or when this user may not drop
    their indexes (it does not own them), they are loaded with their indexes, as when they are
    not empty."""
    empty = [t for t in tables if conn.execute(sql.SQL("select not exists (select 1 from {})").format(
        sql.Identifier(schema, t))).fetchone()[0]]
    if not empty:
        return frozenset(), []
    rebuild: list[sql.Composable] = []
    try:
        with conn.transaction():   # a savepoint: a lock or a drop refused undoes them all
            conn.execute(sql.SQL("lock table {} in access exclusive mode nowait").format(
                sql.SQL(", ").join(sql.Identifier(schema, t) for t in empty)))
            foreign_keys = conn.execute(_FOREIGN_KEYS, (schema, empty)).fetchall()
            for table, constraint, constraint_def in foreign_keys:
                conn.execute(sql.SQL("alter table {} drop constraint {}").format(
                    sql.Identifier(schema, table), sql.Identifier(constraint)))
            for table, index, index_def, constraint, constraint_def, primary in conn.execute(
                    _REBUILDABLE_INDEXES, (schema, empty)).fetchall():
                if primary and keep_primary_keys:
                    continue
                if constraint is None:
                    conn.execute(sql.SQL("drop index {}").format(sql.Identifier(schema, index)))
                    rebuild.append(sql.SQL(index_def))
                else:
                    conn.execute(sql.SQL("alter table {} drop constraint {}").format(
                        sql.Identifier(schema, table), sql.Identifier(constraint)))
                    rebuild.append(_add_constraint(schema, table, constraint, constraint_def))
            # the foreign keys last, each checked by one join over the rows loaded
            rebuild += [_add_constraint(schema, *fk) for fk in foreign_keys]
    except psycopg.errors.LockNotAvailable:
        logger.info("%s: %s in use by another session: loaded with their indexes", what, ", ".join(empty))
        return frozenset(), []
    except psycopg.errors.InsufficientPrivilege:
        logger.info("%s: %s not owned by this user: loaded with their indexes", what, ", ".join(empty))
        return frozenset(), []
    logger.info("%s: %s empty: loaded first, %s indexes built after, %s foreign keys added after", what,
                ", ".join(empty), len(rebuild) - len(foreign_keys), len(foreign_keys))
    return frozenset(empty), rebuild


def _add_constraint(schema: str, table: str, name: str, definition: str) -> sql.Composed:
    return sql.SQL("alter table {} add constraint {} {}").format(
        sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(definition))
