"""Origins: which source record brought each person in first.

Rule: the person's earliest linked lead (by the record's own timestamp; ties broken by the
configured source priority, then the key); a person with no lead gets `driver_direct` with
their earliest driver record. Origins decide who gets paid, so:
- a missing origin is written in every run (`backfill`, the seeds' ORIGIN_MISSING fix);
- an existing origin that no longer follows the rule is only *reported* (`inconsistent`),
  and changed only on request (`repair`), each change audited in identity_origin_history.
"""
from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from matcher.config import Config

TAG_SQL = (
    "case l.source_table when 'cabinet_leads' then 'cabinet_lead'"
    " when 'scout_registrations' then 'scout_registration'"
    " when 'fleet_migrations' then 'fleet_migration' else 'driver_direct' end"
)


def expected_origins_sql(cfg: Config, where: sql.Composable | None = None, *,
                         links: sql.Composable | None = None, event_at: str = "source_event_at") -> sql.Composed:
    """One row per person with links (optionally only links matching `where`): the origin the rule gives.

    `links` is the relation of (person_key, source_table, source_pk, `event_at`) rows to take
    them from, canon.identity_links by default.
    """
    priority = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(t), sql.Literal(i)) for i, t in enumerate(cfg.origin_source_priority)
    )
    return sql.SQL(
        "select distinct on (l.person_key) l.person_key, " + TAG_SQL + " as origin_tag,"
        " l.source_table as origin_source_table, l.source_pk as origin_source_pk, l.{event_at} as origin_at,"
        " case when l.source_table = 'drivers' then 'no_lead_earliest_driver' else 'earliest_lead' end as origin_rule"
        " from {links} l join (values {priority}) pr(source_table, rank) using (source_table)"
        " {where}"
        " order by l.person_key, (l.source_table = 'drivers'), l.{event_at} nulls last, pr.rank, l.source_pk"
    ).format(links=links if links is not None else sql.SQL("{}.identity_links").format(sql.Identifier(cfg.canon_schema)),
             event_at=sql.Identifier(event_at), priority=priority,
             where=sql.SQL("where ") + where if where is not None else sql.SQL(""))


INSERT_ORIGINS = (
    "insert into {canon}.identity_origin (person_key, origin_tag, origin_source_table, origin_source_pk,"
    " origin_at, origin_rule, run_id)"
    " select e.person_key, e.origin_tag, e.origin_source_table, e.origin_source_pk, e.origin_at, e.origin_rule, %(run)s"
    " from ({expected}) e"
)


def write_new(conn: psycopg.Connection, cfg: Config, run_id: int, records: sql.Composable,
              params: dict | None = None) -> int:
    """Write the origin of persons created just now, whose every link is a row of `records`
    (person_key, source_table, source_pk, event_at): the same rule as `backfill`, without
    looking their links up again (at 1M leads, fetching the links of 50k new persons by person
    key was 1.3 s of the 2.3 s a batch's origins took)."""
    cur = conn.execute(sql.SQL(INSERT_ORIGINS + " on conflict (person_key) do nothing").format(
        canon=sql.Identifier(cfg.canon_schema),
        expected=expected_origins_sql(cfg, links=records, event_at="event_at")), {"run": run_id, **(params or {})})
    return max(cur.rowcount, 0)


def backfill(conn: psycopg.Connection, cfg: Config, run_id: int, person_filter: sql.Composable | None = None,
             params: dict | None = None) -> int:
    """Write the origin of every person that has links but none.

    `person_filter` is a condition on `l.person_key` (links of the persons to consider): the
    expected origin is then computed for those persons only, which keeps per-batch calls cheap.
    """
    query = sql.SQL(
        INSERT_ORIGINS +
        " where not exists (select 1 from {canon}.identity_origin o where o.person_key = e.person_key)"
        " on conflict (person_key) do nothing"
    ).format(canon=sql.Identifier(cfg.canon_schema), expected=expected_origins_sql(cfg, person_filter or sql.SQL(
        "l.person_key in (select r.person_key from {canon}.identity_registry r where not exists"
        " (select 1 from {canon}.identity_origin o where o.person_key = r.person_key))"
    ).format(canon=sql.Identifier(cfg.canon_schema))))
    cur = conn.execute(query, {"run": run_id, **(params or {})})
    return max(cur.rowcount, 0)


@dataclass
class OriginChange:
    person_key: str
    old_tag: str
    old_source_table: str
    new_tag: str
    new_source_table: str
    why: str


def inconsistent(conn: psycopg.Connection, cfg: Config, person_key: str | None = None) -> list[OriginChange]:
    """Origins that contradict the rule: pointing at a record not linked to the person, or not the earliest."""
    rows = conn.execute(
        sql.SQL(
            "select o.person_key::text, o.origin_tag, o.origin_source_table, e.origin_tag, e.origin_source_table,"
            " case when not exists (select 1 from {canon}.identity_links l where l.person_key = o.person_key"
            "   and (l.source_table, l.source_pk) = (o.origin_source_table, o.origin_source_pk))"
            "   then 'origin record not linked to the person' else 'an earlier record is linked to the person' end"
            " from {canon}.identity_origin o join ({expected}) e using (person_key)"
            " where (o.origin_source_table, o.origin_source_pk) <> (e.origin_source_table, e.origin_source_pk)"
            " and (%(person)s::uuid is null or o.person_key = %(person)s::uuid)"
            " order by 1"
        ).format(canon=sql.Identifier(cfg.canon_schema), expected=expected_origins_sql(cfg)),
        {"person": person_key},
    ).fetchall()
    return [OriginChange(*r) for r in rows]


def repair(conn: psycopg.Connection, cfg: Config, run_id: int, reason: str, person_key: str | None = None) -> int:
    """Change inconsistent origins to what the rule gives, writing one history row per change."""
    canon = sql.Identifier(cfg.canon_schema)
    with conn.transaction():
        conn.execute("drop table if exists pg_temp.origin_fix")
        conn.execute(
            sql.SQL(
                "create temp table origin_fix as"
                " select o.person_key, o.origin_tag as old_tag, o.origin_source_table as old_table,"
                " o.origin_source_pk as old_pk, o.origin_at as old_at, e.origin_tag, e.origin_source_table,"
                " e.origin_source_pk, e.origin_at, e.origin_rule"
                " from {canon}.identity_origin o join ({expected}) e using (person_key)"
                " where (o.origin_source_table, o.origin_source_pk) <> (e.origin_source_table, e.origin_source_pk)"
                " and (%(person)s::uuid is null or o.person_key = %(person)s::uuid)"
            ).format(canon=canon, expected=expected_origins_sql(cfg)),
            {"person": person_key},
        )
        conn.execute(
            sql.SQL(
                "insert into {canon}.identity_origin_history (person_key, old_origin_tag, old_origin_source_table,"
                " old_origin_source_pk, old_origin_at, new_origin_tag, new_origin_source_table, new_origin_source_pk,"
                " new_origin_at, reason, run_id)"
                " select person_key, old_tag, old_table, old_pk, old_at, origin_tag, origin_source_table,"
                " origin_source_pk, origin_at, %(reason)s, %(run)s from origin_fix"
            ).format(canon=canon),
            {"reason": reason, "run": run_id},
        )
        cur = conn.execute(
            sql.SQL(
                "update {canon}.identity_origin o set origin_tag = f.origin_tag,"
                " origin_source_table = f.origin_source_table, origin_source_pk = f.origin_source_pk,"
                " origin_at = f.origin_at, origin_rule = f.origin_rule || ':repaired', run_id = %(run)s,"
                " decided_at = clock_timestamp()"
                " from origin_fix f where f.person_key = o.person_key"
            ).format(canon=canon),
            {"run": run_id},
        )
    return max(cur.rowcount, 0)
