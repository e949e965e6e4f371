"""The red-KPI state of every lead, kept in `canon.red_lead_history`, and the recovery queue.

The dbt view `ops.ops_kpi_red_lead_history` is the definition of each lead's red-KPI state
(gap reason, claim coverage, in the backlog or not, when it left). Deriving it touches every
lead, link, origin, attempt and claim, so the KPI views do not derive it on each read: every
command that writes links or origins ends by calling `refresh`, which

1. derives the view once into a temp table;
2. compares it with the kept state and keeps only the leads whose state changed (new, changed,
   or gone);
3. in one transaction, rewrites those rows of `red_lead_history` and syncs the recovery queue
   for those leads only (plus this run's attempts).

A run over unchanged data therefore writes nothing, and the queue always equals the backlog
the KPI views show (both change in the same transaction). Leads whose state did not change are
not visited: their queue items were synced when their state last changed.
"""
from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from matcher.config import Config
from matcher.roles import OPS_SCHEMA

log = logging.getLogger(__name__)

LIVE_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_history")

# the as_of-independent columns of the live view, kept in canon.red_lead_history
STATE_COLUMNS = (
    "lead_record_uid", "lead_source_table", "lead_source_pk", "lead_at", "gap_reason", "last_fail_reason",
    "last_attempt_at", "resolved_at", "claim_covered_at", "is_in_backlog", "exit_kind", "left_at",
)


def refresh(conn: psycopg.Connection, cfg: Config, run_id: int) -> int:
    """Bring red_lead_history and the recovery queue in step with the live view; return rows written."""
    live_view = sql.Identifier(*LIVE_VIEW)
    if conn.execute("select to_regclass(%s)", (".".join(LIVE_VIEW),)).fetchone()[0] is None:
        log.warning("%s is not built yet: red-KPI state and recovery queue not synced (run dbt build)",
                    ".".join(LIVE_VIEW))
        return 0
    canon = sql.Identifier(cfg.canon_schema)
    cols = sql.SQL(", ").join(map(sql.Identifier, STATE_COLUMNS))
    compared = [c for c in STATE_COLUMNS if c != "lead_record_uid"]

    def row_of(alias: str) -> sql.Composed:
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(alias, c) for c in compared))

    conn.execute("drop table if exists pg_temp.lead_state_live, pg_temp.lead_state_changed")
    # the live derivation, once (joins against the view would make the planner derive it again)
    conn.execute(sql.SQL("create temp table lead_state_live as select {} from {}").format(cols, live_view))
    # leads whose state differs from the kept one: new or changed (is_gone false), or gone
    conn.execute(
        sql.SQL(
            "create temp table lead_state_changed as"
            " select coalesce(l.lead_record_uid, k.lead_record_uid) as lead_record_uid,"
            " l.lead_record_uid is null as is_gone, k.lead_record_uid is null as is_new, {live_cols}"
            " from lead_state_live l full join {canon}.red_lead_history k on k.lead_record_uid = l.lead_record_uid"
            " where l.lead_record_uid is null or k.lead_record_uid is null or {live_row} is distinct from {kept_row}"
        ).format(
            live_cols=sql.SQL(", ").join(sql.Identifier("l", c) for c in compared),
            canon=canon, live_row=row_of("l"), kept_row=row_of("k"),
        )
    )
    conn.execute("drop table lead_state_live")
    # hash index: equality lookups on keys of any length (a btree entry is limited to ~2.7 kB)
    conn.execute("create index on lead_state_changed using hash (lead_source_pk)")
    conn.execute("analyze lead_state_changed")
    new, changed, gone = conn.execute(
        "select count(*) filter (where is_new), count(*) filter (where not is_new and not is_gone),"
        " count(*) filter (where is_gone) from lead_state_changed"
    ).fetchone()
    log.info("run %s: red-KPI state: %s new leads, %s changed, %s gone", run_id, f"{new:,}", f"{changed:,}", f"{gone:,}")

    updates = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("c", c)) for c in compared)

    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(canon=canon, cols=cols, updates=updates)

    written = 0
    with conn.transaction():
        for stmt in (
            "delete from {canon}.red_lead_history k using lead_state_changed c"
            " where c.is_gone and k.lead_record_uid = c.lead_record_uid",
            # new leads by a plain insert (a first run inserts every lead), changed ones by an update
            "insert into {canon}.red_lead_history ({cols}, updated_run_id)"
            " select {cols}, %(run)s from lead_state_changed where is_new",
            "update {canon}.red_lead_history k set {updates}, updated_run_id = %(run)s, updated_at = clock_timestamp()"
            " from lead_state_changed c where not c.is_gone and not c.is_new and k.lead_record_uid = c.lead_record_uid",
            # this run's attempts on leads already queued
            "update {canon}.recovery_queue q set attempts = q.attempts + 1, last_attempt_at = a.attempted_at,"
            " status = case a.outcome when 'matched' then 'matched' else 'failed' end,"
            " fail_reason = a.fail_reason, record_fingerprint = a.record_fingerprint,"
            " matched_person_key = a.person_key,"
            " matched_run_id = case a.outcome when 'matched' then a.run_id end,"
            " closed_at = case a.outcome when 'matched' then a.attempted_at end, updated_at = clock_timestamp()"
            " from {canon}.match_attempts a"
            " where a.run_id = %(run)s and (a.source_table, a.source_pk) = (q.source_table, q.source_pk)",
            # seed: every backlog lead has a queue item; one queued now carries this run's attempt
            # from the start (the same row the update above gives an item queued before it, without
            # writing every new item twice: half a million items in a first run)
            "insert into {canon}.recovery_queue (source_table, source_pk, status, lead_at, fail_reason, attempts,"
            " last_attempt_at, record_fingerprint, matched_person_key, matched_run_id, closed_at)"
            " select c.lead_source_table, c.lead_source_pk,"
            " case a.outcome when 'matched' then 'matched' when 'failed' then 'failed' else 'pending' end,"
            " c.lead_at, case when a.outcome is null then c.last_fail_reason else a.fail_reason end,"
            " (a.outcome is not null)::integer, a.attempted_at, a.record_fingerprint, a.person_key,"
            " case a.outcome when 'matched' then a.run_id end, case a.outcome when 'matched' then a.attempted_at end"
            " from lead_state_changed c"
            " left join lateral (select * from {canon}.match_attempts m"
            "   where m.record_uid = c.lead_record_uid and m.run_id = %(run)s"
            "   order by m.attempted_at desc, m.attempt_id desc limit 1) a on true"
            " where not c.is_gone and c.is_in_backlog"
            " on conflict (source_table, md5(source_pk)) do nothing",
            # leads that left the backlog without an attempt of this run: a claim, or a repaired origin
            "update {canon}.recovery_queue q set"
            " status = case when l.person_key is not null and g.gap_reason = 'resolved' then 'matched' else 'claimed' end,"
            " matched_person_key = l.person_key, closed_at = clock_timestamp(), updated_at = clock_timestamp()"
            " from lead_state_changed g"
            " left join {canon}.identity_links l on l.record_uid = g.lead_record_uid"
            " where not g.is_gone and not g.is_in_backlog"
            " and (g.lead_source_table, g.lead_source_pk) = (q.source_table, q.source_pk)"
            " and q.status in ('pending', 'failed')",
            # leads that came back into the backlog (e.g. an origin became inconsistent)
            "update {canon}.recovery_queue q set status = 'pending', closed_at = null, updated_at = clock_timestamp()"
            " from lead_state_changed b"
            " where not b.is_gone and b.is_in_backlog"
            " and (b.lead_source_table, b.lead_source_pk) = (q.source_table, q.source_pk)"
            " and q.status in ('matched', 'claimed')",
        ):
            written += max(conn.execute(q(stmt), {"run": run_id}).rowcount, 0)
    conn.execute("drop table lead_state_changed")
    return written
