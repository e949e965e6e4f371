"""The red-KPI state of every lead, kept in `canon.red_lead_history`, and the recovery queue.

The dbt view `ops.ops_kpi_red_lead_history` is the definition of each lead's red-KPI state
(gap reason, claim coverage, in the backlog or not, when it left). Deriving it touches every
lead, link, origin, attempt and claim, so the KPI views do not derive it on each read: every
command that writes links or origins ends by calling `refresh`, which

1. derives the state of the leads that may have changed into a temp table;
2. compares it with the kept state and keeps only the leads whose state changed (new, changed,
   or gone);
3. in one transaction, rewrites those rows of `red_lead_history` and syncs the recovery queue
   for those leads only (plus this run's attempts).

A run over unchanged data therefore writes nothing, and the queue always equals the backlog
the KPI views show (both change in the same transaction). Leads whose state did not change are
not visited: their queue items were synced when their state last changed.

Which leads may have changed. Step 1 is skipped when nothing the state is derived from changed
since it was kept. What "that" is, is read from the catalog, not listed here: every table the
live view reads, followed through the views it is built on. Each must be covered, either by a
change counter (the canon tables' statement triggers, canon.table_versions) or by the dbt view
`ops_kpi_red_lead_inputs` (the records' newest load id, the claims' hash). The fingerprint of
all that -- with the definitions of the views, and the counters of the kept state itself, so a
hand edit of it is repaired too -- is kept beside the state, in the same transaction. When a
table is not covered (a view changed to read a new one), there is no fingerprint and every
refresh derives every lead.

When something did change, only the leads it can reach are derived (a *scoped* refresh,
through the dbt view `ops_kpi_red_lead_history_scoped`: the same macros as the live view, over
inputs cut to those leads and their persons). A lead's state reads its record, its link, its
attempts, the claims on it, and its person's links, origin and driver claims; so the leads
reached are

- the lead records written since (a newer load id: new, edited, gone from raw);
- the records whose link or attempts changed, and every lead of a person whose links or
  origin changed (statement triggers log each changed row in `canon.red_lead_changes`);
- the lead of each claim added, removed or edited (the claims compared with the copy kept
  beside the state, `canon.red_lead_claims`), and every lead of its driver's person.

Every lead is derived instead when there is nothing kept to compare with, when the views'
definitions changed, when the kept state was written by someone else, when a table the live
view reads logs no changes, after a truncate, or when the leads reached are more than
SCOPED_SHARE of all (a run about to rewrite that many says so first: `expect_changes`).

Everything step 1 reads is read before it derives, so a change made meanwhile by another
session shows up in the next refresh: a logged change stays in the log until the refresh that
read it commits, a claim differs from the copy taken before deriving, a record carries a newer
load id than the one kept.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql

from matcher import bulkload
from matcher.config import Config
from matcher.roles import OPS_SCHEMA

log = logging.getLogger(__name__)

LIVE_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_history")
INPUTS_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_inputs")
# the live view for the leads in canon.red_lead_scope, and what tells which leads a change reached
SCOPED_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_history_scoped")
RECORD_LOADS_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_record_loads")
CLAIMS_VIEW = (OPS_SCHEMA, "ops_kpi_red_lead_claims")
CLAIM_VALUES = "lead_id, driver_id, claimed_at, lead_record_uid, driver_record_uid"  # ops_kpi_red_lead_claims
CLAIM_COLUMNS = "claim_key, " + CLAIM_VALUES  # canon.red_lead_claims
# a claim row's key in the kept copy: the same for the same values in any session (no time zone)
CLAIM_KEY = ("hashtextextended(quote_nullable(lead_id) || '|' || quote_nullable(driver_id) || '|'"
             " || quote_nullable(extract(epoch from claimed_at)), 0)")
# a refresh derives only the leads changes reached while they are at most this share of the
# kept leads; above it, deriving every lead in one pass is cheaper than looking each one up
SCOPED_SHARE = 0.2
# the kept state: its own counters are part of the fingerprint
KEPT_TABLES = ("red_lead_history", "recovery_queue", "red_lead_claims")

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


@dataclass(frozen=True)
class Inputs:
    """What the live derivation reads, as of now."""

    fingerprint: str            # everything, as one string
    definitions: str            # the views' names and definitions only
    records_load_id: int | None  # the records' newest load id
    claims_hash: str            # the claims' count and hash
    scopable: bool              # every input logs or marks its changes (a scoped refresh can tell what moved)


def inputs_fingerprint(conn: psycopg.Connection, cfg: Config) -> str | None:
    """What the live derivation reads, as one string; None when some table it reads is not covered."""
    found = read_inputs(conn, cfg)
    return found.fingerprint if found else None


def read_inputs(conn: psycopg.Connection, cfg: Config) -> Inputs | None:
    """What the live derivation reads; None when some table it reads is not covered.

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
    inputs_row = conn.execute(sql.SQL("select records_load_id, claims_rows, claims_hash from {}").format(
        sql.Identifier(*INPUTS_VIEW))).fetchone()
    scoped = [_closure(conn, view) for view in (SCOPED_VIEW, RECORD_LOADS_VIEW, CLAIMS_VIEW)]
    relations = [list(row[1:]) for row in live + inputs + [r for closure in scoped for r in closure]]
    payload = {
        # names and definitions, not oids: dbt recreates its views on every build
        "relations": relations,
        "versions": _versions(conn, cfg, counted),
        "inputs": [str(v) for v in inputs_row],
    }
    return Inputs(
        fingerprint=_hash(payload),
        definitions=_hash(relations),
        records_load_id=inputs_row[0],
        claims_hash=_hash([str(inputs_row[1]), str(inputs_row[2])]),
        scopable=all(scoped) and _changes_are_logged(conn, cfg, live, inputs, scoped[1] + scoped[2]),
    )


def _changes_are_logged(conn, cfg: Config, live: list[tuple], inputs: list[tuple], helpers: list[tuple]) -> bool:
    """Whether a scoped refresh can tell which leads a change reaches: every table the live view
    reads logs its changed rows (canon.red_lead_changes), or is read by the helper views the
    refresh compares (the records' load ids, the claims)."""
    logged = {row[0] for row in conn.execute(
        "select t.tgrelid::oid from pg_trigger t join pg_proc p on p.oid = t.tgfoid"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = %s and p.proname = 'note_red_lead_changes' and t.tgenabled <> 'D'"
        " group by t.tgrelid having count(*) = 4",  # insert, update, delete, truncate
        (cfg.canon_schema,),
    )}
    compared = {row[0] for row in helpers if row[3] != "v"}
    unlogged = [f"{row[1]}.{row[2]}" for row in live + inputs
                if row[3] != "v" and row[0] not in logged and row[0] not in compared]
    if unlogged:
        log.info("red-KPI state: %s log no changes: every refresh derives every lead", ", ".join(unlogged))
    return not unlogged


def _queue_key(table: str, pk: str) -> str:
    """Join condition to queue item `q` by its unique index (source_table, md5(source_pk)): the
    lookup stays an index probe whatever the planner thinks of the other side's size (joined on
    the raw key, a misestimate of a few rows made it re-scan the whole queue per row)."""
    return f"({table}, md5({pk})) = (q.source_table, md5(q.source_pk)) and {pk} = q.source_pk"


# An item already queued for a lead is left as it is. Into a queue that was empty, loaded before
# its indexes are built (_unindex_empty), the seed's items are the only ones, one per lead: the
# seed goes without this clause (it names the unique index), and building that index after
# checks what the clause would have.
SEED_ARBITER = " on conflict (source_table, md5(source_pk)) do nothing"

# The writes that keep the red-KPI state, queue included, in order (after lead_state_changed
# is filled): {canon}, {cols} (STATE_COLUMNS) and {updates} are filled by keep_statement,
# %(run)s is the run id.
KEEP_STATEMENTS: dict[str, str] = {
    "history_gone": (
        "delete from {canon}.red_lead_history k using lead_state_changed c"
        " where c.is_gone and k.lead_record_uid = c.lead_record_uid"
    ),
    # new leads by a plain insert (a first run inserts every lead), changed ones by an update
    "history_new": (
        "insert into {canon}.red_lead_history ({cols}, updated_run_id)"
        " select {cols}, %(run)s from lead_state_changed where is_new"
    ),
    "history_changed": (
        "update {canon}.red_lead_history k set {updates}, updated_run_id = %(run)s, updated_at = clock_timestamp()"
        " from lead_state_changed c where not c.is_gone and not c.is_new and k.lead_record_uid = c.lead_record_uid"
    ),
    # this run's attempts on leads already queued
    "queue_attempts": (
        "update {canon}.recovery_queue q set attempts = q.attempts + 1, last_attempt_at = a.attempted_at,"
        " status = case a.outcome when 'matched' then 'matched' else 'failed' end,"
        " fail_reason = a.fail_reason, record_fingerprint = a.record_fingerprint,"
        " matched_person_key = a.person_key,"
        " matched_run_id = case a.outcome when 'matched' then a.run_id end,"
        " closed_at = case a.outcome when 'matched' then a.attempted_at end, updated_at = clock_timestamp()"
        " from {canon}.match_attempts a"
        " where a.run_id = %(run)s and " + _queue_key("a.source_table", "a.source_pk")
    ),
    # seed: every backlog lead has a queue item; one queued now carries this run's attempt
    # from the start (the same row the update above gives an item queued before it, without
    # writing every new item twice: half a million items in a first run)
    "queue_seed": (
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
        " where not c.is_gone and c.is_in_backlog" + SEED_ARBITER
    ),
    # leads that left the backlog without an attempt of this run: a claim, or a repaired origin
    "queue_left": (
        "update {canon}.recovery_queue q set"
        " status = case when l.person_key is not null and g.gap_reason = 'resolved' then 'matched' else 'claimed' end,"
        " matched_person_key = l.person_key, closed_at = clock_timestamp(), updated_at = clock_timestamp()"
        " from lead_state_changed g"
        " left join {canon}.identity_links l on l.record_uid = g.lead_record_uid"
        " where not g.is_gone and not g.is_in_backlog"
        " and " + _queue_key("g.lead_source_table", "g.lead_source_pk") +
        " and q.status in ('pending', 'failed')"
    ),
    # leads that came back into the backlog (e.g. an origin became inconsistent)
    "queue_back": (
        "update {canon}.recovery_queue q set status = 'pending', closed_at = null, updated_at = clock_timestamp()"
        " from lead_state_changed b"
        " where not b.is_gone and b.is_in_backlog"
        " and " + _queue_key("b.lead_source_table", "b.lead_source_pk") +
        " and q.status in ('matched', 'claimed')"
    ),
}


# The keep statements that change only items queued before this refresh: an attempt on an item
# (before the seed), and leaving the backlog (an item the seed queues is a backlog lead's). A
# refresh that found the queue empty skips them (queue_left, with the queue's indexes dropped,
# hash-joined every lead to it: 0.9 s at 1M leads).
QUEUED_BEFORE = ("queue_attempts", "queue_left")


def keep_statement(cfg: Config, name: str, unindexed: frozenset[str] = frozenset()) -> sql.Composed:
    """One of KEEP_STATEMENTS, composed for the canon schema; `unindexed`: the kept tables loaded
    without their indexes in this refresh."""
    compared = [c for c in STATE_COLUMNS if c != "lead_record_uid"]
    text = KEEP_STATEMENTS[name]
    if name == "queue_seed" and "recovery_queue" in unindexed:
        text = text.removesuffix(SEED_ARBITER)
    return sql.SQL(text).format(
        canon=sql.Identifier(cfg.canon_schema),
        cols=sql.SQL(", ").join(map(sql.Identifier, STATE_COLUMNS)),
        updates=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("c", c)) for c in compared),
    )


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _with_kept(conn: psycopg.Connection, cfg: Config, fingerprint: str) -> str:
    """The inputs' fingerprint joined with the kept state's own counters (as of now)."""
    kept = _versions(conn, cfg, KEPT_TABLES)
    return hashlib.sha256(json.dumps([fingerprint, kept]).encode()).hexdigest()


@dataclass(frozen=True)
class Kept:
    """What the kept state was derived from (canon.red_lead_history_inputs)."""

    fingerprint: str
    definitions: str | None
    records_load_id: int | None
    claims_hash: str | None
    kept_versions: str | None
    derived_leads: int | None


def kept_inputs(conn: psycopg.Connection, cfg: Config) -> Kept | None:
    row = conn.execute(sql.SQL(
        "select fingerprint, definitions, records_load_id, claims_hash, kept_versions, derived_leads"
        " from {}.red_lead_history_inputs").format(sql.Identifier(cfg.canon_schema))).fetchone()
    return Kept(*row) if row else None


def kept_fingerprint(conn: psycopg.Connection, cfg: Config) -> str | None:
    kept = kept_inputs(conn, cfg)
    return kept.fingerprint if kept else None


def _kept_rows(conn: psycopg.Connection, cfg: Config) -> int:
    estimate = conn.execute(
        "select c.reltuples from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = %s and c.relname = 'red_lead_history'", (cfg.canon_schema,)).fetchone()
    if estimate and estimate[0] >= 0:
        return int(estimate[0])
    return conn.execute(sql.SQL("select count(*) from {}.red_lead_history").format(
        sql.Identifier(cfg.canon_schema))).fetchone()[0]


def expect_changes(conn: psycopg.Connection, cfg: Config, records: int) -> None:
    """A run about to write `records` records says so: when that is more than a scoped refresh
    would derive, it marks "derive every lead" now, so its writes log nothing row by row."""
    if records <= SCOPED_SHARE * _kept_rows(conn, cfg):
        return
    canon = sql.Identifier(cfg.canon_schema)
    conn.execute(sql.SQL(
        "insert into {canon}.red_lead_changes (record_uid, person_key) select null, null"
        " where not exists (select 1 from {canon}.red_lead_changes where record_uid is null and person_key is null)"
    ).format(canon=canon))


def _scope(conn: psycopg.Connection, cfg: Config, now: Inputs | None, kept: Kept | None,
           kept_rewritten: bool) -> int | None:
    """Fill temp table lead_scope with the leads whose state may differ from the kept one; return
    how many, or None when every lead must be derived (nothing kept to compare with, another
    definition, an input that logs no changes, a truncate, or too many leads reached)."""
    canon = sql.Identifier(cfg.canon_schema)
    if now is None or not now.scopable or kept is None or kept.definitions != now.definitions:
        return None
    if kept.records_load_id is None or now.records_load_id is None or kept.claims_hash is None:
        return None
    if kept_rewritten:
        return None  # the kept state was written by someone else since
    if conn.execute("select exists (select 1 from red_changes_seen where record_uid is null and person_key is null)"
                    ).fetchone()[0]:
        return None
    limit = int(SCOPED_SHARE * _kept_rows(conn, cfg))

    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(canon=canon, loads=sql.Identifier(*RECORD_LOADS_VIEW))

    conn.execute("create temp table lead_scope (lead_record_uid bigint primary key)")
    add = "insert into lead_scope (lead_record_uid) {} on conflict do nothing"
    # records written since (new, edited, gone from raw)
    conn.execute(q(add.format("select lead_record_uid from {loads} where load_id > %s")), (kept.records_load_id,))
    # records whose link or attempts changed, and every lead of a person whose links or origin changed
    conn.execute(q(add.format(
        "select record_uid from red_changes_seen where record_uid is not null"
        " union select l.record_uid from {canon}.identity_links l"
        " where l.person_key in (select person_key from red_changes_seen where person_key is not null)"
        " and l.source_table <> 'drivers'")))
    if now.claims_hash != kept.claims_hash:
        # claims added, removed or edited (claims_changed, against the kept copy): their lead,
        # and every lead of the person their driver is linked to
        conn.execute(q(add.format(
            "select lead_record_uid from claims_changed where lead_id is not null"
            " union select l.record_uid from {canon}.identity_links l"
            " where l.person_key in (select d.person_key from {canon}.identity_links d"
            "   join claims_changed c on c.driver_record_uid = d.record_uid where c.driver_id is not null)"
            " and l.source_table <> 'drivers'")))
    n = conn.execute("select count(*) from lead_scope").fetchone()[0]
    if n > limit:
        log.info("red-KPI state: %s leads reached by changes, more than %s: every lead is derived", f"{n:,}", f"{limit:,}")
        return None
    conn.execute("analyze lead_scope")
    return n


# The kept tables a refresh fills. One that a refresh of every lead finds empty (the first
# refresh, or after a truncate) is loaded without its indexes, which are built again after the
# load in the same transaction: at 1M leads, 1M claims into the empty copy with its three indexes
# 8.4 s, 3.8 s loading then building; the history 4.1 s -> 1.5 s; the first refresh as a whole
# 46-54 s -> 33-37 s (docs/benchmark.md, round 14).
LOADED_TABLES = ("red_lead_claims", "red_lead_history", "recovery_queue")

def _unindex_empty(conn: psycopg.Connection, cfg: Config) -> tuple[frozenset[str], list[sql.Composable]]:
    """The kept tables that are empty, their indexes dropped in the caller's transaction, and the
    statements that build them again once the rows are in (matcher/bulkload.py)."""
    return bulkload.unindex_empty(conn, cfg.canon_schema, LOADED_TABLES, what="red-KPI state", logger=log)


def refresh(conn: psycopg.Connection, cfg: Config, run_id: int | None) -> int:
    """Bring red_lead_history and the recovery queue in step with the live view; return rows written."""
    if conn.execute("select to_regclass(%s)", (".".join(LIVE_VIEW),)).fetchone()[0] is None:
        log.warning("%s is not built yet: red-KPI state and recovery queue not synced (run dbt build)",
                    ".".join(LIVE_VIEW))
        return 0
    now = read_inputs(conn, cfg)
    kept = kept_inputs(conn, cfg)
    if now is not None and kept is not None and kept.fingerprint == _with_kept(conn, cfg, now.fingerprint):
        log.info("run %s: red-KPI state: nothing it is derived from changed since it was kept", run_id)
        return 0
    conn.execute("drop table if exists pg_temp.lead_state_live, pg_temp.lead_state_changed, pg_temp.lead_scope,"
                 " pg_temp.red_changes_seen, pg_temp.claims_now, pg_temp.claims_changed")
    # One transaction from here: the claims copy, the scope, the state and its inputs row change
    # together or not at all (a refresh that dies half-way leaves the last kept state whole).
    with conn.transaction():
        written = _derive_and_keep(conn, cfg, run_id, now, kept)
    conn.execute("drop table if exists lead_state_changed, lead_scope, red_changes_seen, claims_now, claims_changed")
    return written


def _derive_and_keep(conn: psycopg.Connection, cfg: Config, run_id: int | None, now: Inputs | None,
                     kept: Kept | None) -> int:
    canon = sql.Identifier(cfg.canon_schema)
    cols = sql.SQL(", ").join(map(sql.Identifier, STATE_COLUMNS))
    compared = [c for c in STATE_COLUMNS if c != "lead_record_uid"]

    def row_of(alias: str) -> sql.Composed:
        return sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(alias, c) for c in compared))

    # Read before deriving: what changes after these reads shows up in the next refresh (a
    # logged change stays logged, a claim differs from the copy, a record gets a newer load id).
    conn.execute(sql.SQL("create temp table red_changes_seen as select change_id, record_uid, person_key"
                         " from {}.red_lead_changes").format(canon))
    # the claims copy is reconciled with the claims when they changed, and when anyone but a
    # refresh wrote the kept tables since (the copy among them)
    kept_rewritten = kept is not None and kept.kept_versions != json.dumps(_versions(conn, cfg, KEPT_TABLES))
    new_claims = now is not None and now.scopable and (
        kept is None or kept.claims_hash != now.claims_hash or kept_rewritten)
    # an empty copy (the first refresh, or after a truncate): every claim now is added, with
    # nothing to compare (1M claims: the two set differences below cost 1.4 s)
    copy_empty = new_claims and not conn.execute(
        sql.SQL("select exists (select 1 from {}.red_lead_claims)").format(canon)).fetchone()[0]
    if copy_empty:
        conn.execute(sql.SQL(
            "create temp table claims_changed as select distinct {key} as claim_key, {cols}, true as is_added from {view}"
        ).format(key=sql.SQL(CLAIM_KEY), cols=sql.SQL(CLAIM_VALUES), view=sql.Identifier(*CLAIMS_VIEW)))
    elif new_claims:
        # the claims now, as distinct rows, and how they differ from the kept copy
        conn.execute(sql.SQL("create temp table claims_now as select distinct {key} as claim_key, {cols} from {view}").format(
            key=sql.SQL(CLAIM_KEY), cols=sql.SQL(CLAIM_VALUES), view=sql.Identifier(*CLAIMS_VIEW)))
        conn.execute(sql.SQL(
            "create temp table claims_changed as"
            " select *, true as is_added from (select * from claims_now except select {cols} from {canon}.red_lead_claims) a"
            " union all"
            " select *, false from (select {cols} from {canon}.red_lead_claims except select * from claims_now) g"
        ).format(cols=sql.SQL(CLAIM_COLUMNS), canon=canon))
    scope = _scope(conn, cfg, now, kept, kept_rewritten)
    # only when every lead is derived (the first refresh always is): a scoped refresh writes a few
    # rows, and would lock a table that stays empty (no claims, nobody in the backlog) for nothing
    unindexed, rebuild = _unindex_empty(conn, cfg) if scope is None else (frozenset(), [])
    if new_claims:
        # the copy becomes the claims now (a scoped derivation reads claims from it)
        if not copy_empty:
            conn.execute(sql.SQL(
                "delete from {canon}.red_lead_claims k using claims_changed g where not g.is_added"
                " and k.claim_key = g.claim_key and (k.lead_id, k.driver_id, k.claimed_at)"
                " is not distinct from (g.lead_id, g.driver_id, g.claimed_at)").format(canon=canon))
        conn.execute(sql.SQL("insert into {canon}.red_lead_claims ({cols}) select {cols} from claims_changed"
                             " where is_added").format(canon=canon, cols=sql.SQL(CLAIM_COLUMNS)))

    if scope is None:
        # the live derivation, once (joins against the view would make the planner derive it again)
        conn.execute(sql.SQL("create temp table lead_state_live as select {} from {}").format(
            cols, sql.Identifier(*LIVE_VIEW)))
        kept_rows = sql.SQL("{}.red_lead_history").format(canon)
    else:
        # the leads reached, through the scoped view; red_lead_scope is filled and emptied in
        # this transaction, so no other session sees it filled
        conn.execute(sql.SQL("insert into {}.red_lead_scope select lead_record_uid from lead_scope").format(canon))
        conn.execute(sql.SQL("analyze {}.red_lead_scope").format(canon))
        # a few thousand lookups by key into tables the last run just read or wrote (cached):
        # priced as random reads of disk pages, they lose to whole-table hash joins that take
        # twice as long (0.5 s against 1.2 s for 14k leads at 1M)
        conn.execute("set local random_page_cost = 1.1")
        conn.execute(sql.SQL("create temp table lead_state_live as select {} from {}").format(
            cols, sql.Identifier(*SCOPED_VIEW)))
        conn.execute("reset random_page_cost")
        conn.execute(sql.SQL("delete from {}.red_lead_scope").format(canon))
        kept_rows = sql.SQL("(select k.* from {}.red_lead_history k join lead_scope s"
                            " on s.lead_record_uid = k.lead_record_uid)").format(canon)
    # leads whose state differs from the kept one: new or changed (is_gone false), or gone
    conn.execute(
        sql.SQL(
            "create temp table lead_state_changed as"
            " select coalesce(l.lead_record_uid, k.lead_record_uid) as lead_record_uid,"
            " l.lead_record_uid is null as is_gone, k.lead_record_uid is null as is_new, {live_cols}"
            " from lead_state_live l full join {kept_rows} k on k.lead_record_uid = l.lead_record_uid"
            " where l.lead_record_uid is null or k.lead_record_uid is null or {live_row} is distinct from {kept_row}"
        ).format(
            live_cols=sql.SQL(", ").join(sql.Identifier("l", c) for c in compared),
            kept_rows=kept_rows, live_row=row_of("l"), kept_row=row_of("k"),
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
    log.info("run %s: red-KPI state (%s): %s new leads, %s changed, %s gone", run_id,
             "every lead derived" if scope is None else f"{scope:,} leads reached by changes derived",
             f"{new:,}", f"{changed:,}", f"{gone:,}")

    def q(text: str) -> sql.Composed:
        return sql.SQL(text).format(canon=canon)

    written = 0
    for name in KEEP_STATEMENTS:
        if name in QUEUED_BEFORE and "recovery_queue" in unindexed:
            continue  # the queue was empty: only the seed's items are in it
        written += max(conn.execute(keep_statement(cfg, name, unindexed), {"run": run_id}).rowcount, 0)
    for statement in rebuild:
        conn.execute(statement)
    # the changes this state accounts for
    conn.execute(q("delete from {canon}.red_lead_changes c using red_changes_seen s where c.change_id = s.change_id"))
    # what this state was derived from, with the kept state's counters after these writes
    conn.execute(q("delete from {canon}.red_lead_history_inputs"))
    if now is not None:
        conn.execute(
            q("insert into {canon}.red_lead_history_inputs (fingerprint, run_id, definitions, records_load_id,"
              " claims_hash, kept_versions, derived_leads) values (%s, %s, %s, %s, %s, %s, %s)"),
            (_with_kept(conn, cfg, now.fingerprint), run_id, now.definitions, now.records_load_id,
             now.claims_hash if now.scopable else None, json.dumps(_versions(conn, cfg, KEPT_TABLES)), scope))
    return written
