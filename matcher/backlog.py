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

Step 1 reads every lead, link, origin, attempt and claim (about 20 s at a million leads), so it
is skipped when none of them changed since the kept state was derived. What "them" is, is read
from the catalog, not listed here: every table the live view reads, followed through the views
it is built on. Each must be covered, either by a change counter (the canon tables' statement
triggers, canon.table_versions) or by the dbt view `ops_kpi_red_lead_inputs` (the records'
newest load id, the claims' hash). The fingerprint of all that -- with the definitions of the
views, and the counters of the kept state itself, so a hand edit of it is repaired too -- is
kept beside the state, in the same transaction. When a table is not covered (a view changed to
read a new one), there is no fingerprint and every refresh derives.
"""
from __future__ import annotations

import hashlib
import json
import logging

import psycopg
from psycopg import sql

from matcher.config import Config
from matcher.roles import OPS_SCHEMA

log = logging.getLogger(__name__)

LIVE_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_history")
INPUTS_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_inputs")
# the kept state: its own counters are part of the fingerprint
KEPT_TABLES = ("red_lead_history", "recovery_queue")

# the as_of-independent columns of the live view, kept in canon.red_lead_history
STATE_COLUMNS = (
    "lead_record_uid", "lead_source_table", "lead_source_pk", "lead_at", "gap_reason", "last_fail_reason",
    "last_attempt_at", "resolved_at", "claim_covered_at", "is_in_backlog", "exit_kind", "left_at",
)


# every relation a view is built on, followed through views (pg_rewrite -> pg_depend)
_CLOSURE = """
with recursive deps(oid) as (
    select to_regclass(%(view)s)::oid
    union
    select d.refobjid
    from deps
    join pg_rewrite r on r.ev_class = deps.oid
    join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = r.oid
        and d.refclassid = 'pg_class'::regclass and d.refobjid <> deps.oid
)
select c.oid, n.nspname, c.relname, c.relkind::text,
    case when c.relkind = 'v' then pg_get_viewdef(c.oid) end as definition
from deps
join pg_class c on c.oid = deps.oid
join pg_namespace n on n.oid = c.relnamespace
order by n.nspname, c.relname
"""


def _closure(conn: psycopg.Connection, view: tuple[str, str]) -> list[tuple]:
    if conn.execute("select to_regclass(%s)", (".".join(view),)).fetchone()[0] is None:
        return []
    return conn.execute(_CLOSURE, {"view": ".".join(view)}).fetchall()


def _versioned_tables(conn: psycopg.Connection, cfg: Config) -> dict[int, str]:
    """Canon tables whose every change moves their counter: oid -> name."""
    return dict(conn.execute(
        "select c.oid, c.relname from pg_trigger t"
        " join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace"
        " join pg_proc p on p.oid = t.tgfoid"
        " where n.nspname = %s and p.proname = 'bump_table_version' and p.pronamespace = n.oid"
        " and t.tgenabled <> 'D'"
        " group by c.oid, c.relname having count(*) = 4",  # insert, update, delete, truncate
        (cfg.canon_schema,),
    ).fetchall())


def _versions(conn: psycopg.Connection, cfg: Config, tables) -> list[tuple[str, int]]:
    names = sorted(tables)
    found = dict(conn.execute(
        sql.SQL("select table_name, version from {}.table_versions where table_name = any(%s)").format(
            sql.Identifier(cfg.canon_schema)), (names,)).fetchall())
    return [(t, found.get(t, 0)) for t in names]


def inputs_fingerprint(conn: psycopg.Connection, cfg: Config) -> str | None:
    """What the live derivation reads, as one string; None when some table it reads is not covered.

    Covered: a canon table with the change-counter triggers, or a table the inputs view reads.
    The views' definitions are part of it (a new dbt definition derives again).
    """
    live = _closure(conn, LIVE_VIEW)
    inputs = _closure(conn, INPUTS_VIEW)
    if not live or not inputs:
        return None
    versioned = _versioned_tables(conn, cfg)
    read_by_inputs = {row[0] for row in inputs if row[3] != "v"}
    uncovered = [f"{row[1]}.{row[2]}" for row in live
                 if row[3] != "v" and row[0] not in versioned and row[0] not in read_by_inputs]
    if uncovered:
        log.warning("%s reads %s, which %s does not cover: the red-KPI state is derived on every run",
                    ".".join(LIVE_VIEW), ", ".join(uncovered), ".".join(INPUTS_VIEW))
        return None
    if not set(KEPT_TABLES) <= set(versioned.values()):
        return None
    counted = {versioned[row[0]] for row in live if row[0] in versioned}
    inputs_row = conn.execute(sql.SQL("select * from {}").format(sql.Identifier(*INPUTS_VIEW))).fetchall()
    payload = {
        # names and definitions, not oids: dbt recreates its views on every build
        "relations": [list(row[1:]) for row in live + inputs],
        "versions": _versions(conn, cfg, counted),
        "inputs": [[str(v) for v in row] for row in inputs_row],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _with_kept(conn: psycopg.Connection, cfg: Config, fingerprint: str) -> str:
    """The inputs' fingerprint joined with the kept state's own counters (as of now)."""
    kept = _versions(conn, cfg, KEPT_TABLES)
    return hashlib.sha256(json.dumps([fingerprint, kept]).encode()).hexdigest()


def kept_fingerprint(conn: psycopg.Connection, cfg: Config) -> str | None:
    row = conn.execute(sql.SQL("select fingerprint from {}.red_lead_history_inputs").format(
        sql.Identifier(cfg.canon_schema))).fetchone()
    return row[0] if row else None


def refresh(conn: psycopg.Connection, cfg: Config, run_id: int) -> int:
    """Bring red_lead_history and the recovery queue in step with the live view; return rows written."""
    live_view = sql.Identifier(*LIVE_VIEW)
    if conn.execute("select to_regclass(%s)", (".".join(LIVE_VIEW),)).fetchone()[0] is None:
        log.warning("%s is not built yet: red-KPI state and recovery queue not synced (run dbt build)",
                    ".".join(LIVE_VIEW))
        return 0
    canon = sql.Identifier(cfg.canon_schema)
    inputs = inputs_fingerprint(conn, cfg)
    if inputs is not None and kept_fingerprint(conn, cfg) == _with_kept(conn, cfg, inputs):
        log.info("run %s: red-KPI state: nothing it is derived from changed since it was kept", run_id)
        return 0
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
        # what this state was derived from, with the kept state's counters after these writes
        conn.execute(q("delete from {canon}.red_lead_history_inputs"))
        if inputs is not None:
            conn.execute(q("insert into {canon}.red_lead_history_inputs (fingerprint, run_id) values (%s, %s)"),
                         (_with_kept(conn, cfg, inputs), run_id))
    conn.execute("drop table lead_state_changed")
    return written
