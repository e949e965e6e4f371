"""One matcher run: read the dbt-built candidates, score, cluster, write, record.

Flow (one advisory lock per canon schema, so one run at a time):
1. record the run (`match_runs`, status running); mark runs left "running" by a dead process failed;
2. check the candidate tables against the contract the matcher was written for;
3. choose the records *due* for an attempt: pending (no link), and never tried, or changed since
   their last attempt, or failed longer than `retry_after_hours` ago with attempts left;
4. stream candidate pairs touching a due record, score them column-wise, keep accepted pairs;
   apply human decisions (do-not-link removes a pair, force-link adds one);
5. connected components of accepted pairs; per component: no person -> a new person (key
   derived from the component's smallest record key, so re-runs and resumed runs agree), one
   person -> link the rest to it, two or more, or too big -> conflict (nothing merged);
6. write decisions in batches that never split a component, one transaction per batch:
   COPY into a temp table, then set-based idempotent upserts of registry, links, origins and
   the append-only attempt log;
7. write origins for every person that has links but no origin (also legacy links);
8. bring the red-KPI state of the leads that changed, and their recovery-queue items, in step
   (matcher/backlog.py);
9. close the run with its counts.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from matcher import backlog, bulkload, cluster, copyio, dense, forked, origins, scoring
from matcher.config import FIELDS, LEVELS, Config
from matcher.db import Database
from matcher.errors import CandidateContractError, MatcherError, RunLocked
from matcher.migrate import migrate

log = logging.getLogger(__name__)

# Same expression as macros/record_uid.sql: a stable 64-bit id for (source_table, source_pk).
RECORD_UID_SQL = "('x' || left(md5({t} || ':' || {k}), 16))::bit(64)::bigint"

CANDIDATE_CONTRACT = {
    "identity_candidates": {"left_uid": "bigint", "right_uid": "bigint", "blocking_mask": "smallint"},
    "identity_records": {
        "record_uid": "bigint", "phone": "text", "document_number": "text", "email": "text", "plate": "text",
        "claim_driver_id": "text", "full_name": "text", "name_frequency": "integer",
    },
    "identity_pending_records": {
        "record_uid": "bigint", "source_table": "text", "source_pk": "text", "record_kind": "text",
        "origin_tag": "text", "event_at": "timestamp with time zone", "fingerprint": "text",
        "usable_identifier_count": "integer", "precheck_fail_reason": "text", "load_id": "bigint",
    },
}


# What a record's attempts `a` say of it (pending record `p`): their latest moment (null without
# one), the latest of those that saw the record's fingerprint now, their number.
ATTEMPT_SUMMARY = ("max(a.attempted_at) as last_at,"
                   " max(a.attempted_at) filter (where a.record_fingerprint is not distinct from p.fingerprint)"
                   " as last_same, count(a.attempt_id) as attempts")
# When a record is due for an attempt, from that summary: never tried, changed since its last
# attempt, or failed longer than the retry interval ago with attempts left. Parameters: now,
# retry (seconds), max_attempts.
DUE_RULE = ("(last_at is null or last_same is distinct from last_at"
            " or (last_at < %(now)s - make_interval(secs => %(retry)s) and attempts < %(max_attempts)s))")

# what a run keeps of each due record (temp table `due`), from identity_pending_records `p`
DUE_COLUMNS = "p.record_uid, p.source_table, p.source_pk, p.record_kind, p.fingerprint, p.precheck_fail_reason"

DUE_PATHS = {
    "first": "a first run: every pending record",
    "join": "every pending record joined with its attempts",
    "since": "looked up among those rewritten or past their retry interval since the last complete run",
}

# a run looks up at most this many records that may have become due since the last complete
# run one by one (_due_since); more (a full refresh of the identity models) are joined whole
DUE_LOOKUPS_MAX = 200_000

# a run reads the attributes of at most this many records by an array parameter, more through
# a temporary table joined to the records (_read_records says why, with the figures)
RECORD_ARRAY_MAX = 500_000

# Scoring on several processes (_score_processes): with score_processes = 0, one per CPU, at
# most this many (each adds its own batches and results to the parent's memory: about 340 MB
# at 1M leads) and one per this many pairs.
SCORE_PROCESSES_MAX = 4
SCORE_PAIRS_PER_PROCESS = 1_000_000

# one level code per field (index into LEVELS[field]) in the nodes tables
LEVEL_COLUMNS_DDL = ", ".join(f"{f} smallint" for f in FIELDS)

# The canon tables a first run fills, loaded before their indexes and foreign keys are built
# (_write_batches); their primary keys stay: the origins' is the arbiter of their upsert.
FIRST_RUN_TABLES = ("identity_links", "match_attempts", "identity_origin")

# the per-batch write statements, in order (RunResult.detail keys)
STATEMENT_NAMES = ("write_registry", "write_links", "write_conflicts", "write_attempts")

# The tables a run writes are analyzed by the run itself, before the red-KPI state is derived
# from them, when it wrote at least a tenth of a table's rows (autovacuum's rule, without its
# delay) or the table was never analyzed: right after a first run the derivation was otherwise
# planned for near-empty tables (seen once at 100k leads: 56 s instead of 3 s). ANALYZE samples
# a fixed number of rows: well under a second per table at any size.
WRITTEN_TABLES = ("identity_registry", "identity_links", "identity_origin", "identity_origin_history",
                  "match_attempts", "match_conflicts")

# decision codes in the uploaded node table
LINK_NEW, LINK_EXISTING, CONFLICT = 1, 2, 3


def pair_positions(uids: np.ndarray, inverse: np.ndarray, rec_uid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs `inverse` (rows of two indexes into the sorted `uids`) as two int32 arrays of
    positions in `rec_uid` (sorted: the records read). A pair with a record not read (it left the
    input since dbt built the candidates) is dropped; records read and in no pair are ignored."""
    if len(rec_uid) == len(uids) and np.array_equal(rec_uid, uids):
        return inverse[:, 0].copy(), inverse[:, 1].copy()
    position = np.searchsorted(rec_uid, uids)
    present = position < len(rec_uid)
    present[present] &= rec_uid[position[present]] == uids[present]
    position[~present] = -1
    li, ri = position[inverse[:, 0]], position[inverse[:, 1]]
    keep = (li >= 0) & (ri >= 0)
    return li[keep].astype(np.int32), ri[keep].astype(np.int32)


@dataclass
class RunResult:
    run_id: int
    status: str
    processed: int = 0
    matched: int = 0
    new_persons: int = 0
    origins_written: int = 0
    failed_by_reason: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    pairs_scored: int = 0
    pairs_accepted: int = 0
    rows_written: int = 0
    # processes that scored the pairs, and the private memory the forked ones had when they ended
    score_processes: int = 1
    score_children_mb: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    # finer split of the phases above (seconds), for the benchmark: not added to the phases
    detail: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def clock(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.detail[name] = self.detail.get(name, 0.0) + time.perf_counter() - t

    @property
    def failed(self) -> int:
        return sum(self.failed_by_reason.values())


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a run reads and scores: those phases build
    millions of small lists and strings that hold no reference cycles, and each collection walks
    every one of them (1M leads: scoring 3M pairs 17.0 s -> 15.5 s). Collection resumes, as it
    was, when the block ends, however it ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _lock_key(schema: str) -> int:
    return int.from_bytes(("matcher:" + schema).encode()[:8].ljust(8, b"\0"), "big", signed=True)


@dataclass
class RunHandle:
    """What a locked run hands to its body: its id and the control connection."""

    run_id: int
    control: psycopg.Connection
    counts: dict = field(default_factory=dict)

    def heartbeat(self, canon: str) -> None:
        self.control.execute(
            sql.SQL("update {}.match_runs set heartbeat_at = clock_timestamp() where run_id = %s").format(
                sql.Identifier(canon)), (self.run_id,))


@contextmanager
def locked_run(db: Database, cfg: Config, command: str, parameters: dict | None = None) -> Iterator[RunHandle]:
    """Run a body as one recorded matcher run, at most one at a time per canon schema.

    The lock is a session advisory lock held by a dedicated connection: if the process dies,
    Postgres drops the connection and the lock with it, so a crash never blocks the next run;
    that next run marks the dead one failed.
    """
    canon = sql.Identifier(cfg.canon_schema)
    params = json.dumps(cfg.as_parameters() | (parameters or {}))

    def record(status: str, error: str | None = None) -> int:
        return control.execute(
            sql.SQL(
                "insert into {}.match_runs (command, status, parameters, pid, host, error, finished_at)"
                " values (%s, %s, %s, %s, %s, %s, case when %s <> 'running' then clock_timestamp() end)"
                " returning run_id"
            ).format(canon),
            (command, status, params, os.getpid(), socket.gethostname(), error, status),
        ).fetchone()[0]

    control = db.connect(autocommit=True, application_name=f"matcher-{command}")
    try:
        migrate(control, cfg.canon_schema)
        if not control.execute("select pg_try_advisory_lock(%s)", (_lock_key(cfg.canon_schema),)).fetchone()[0]:
            run_id = record("skipped", "another matcher run holds the lock")
            raise RunLocked(f"another matcher run is in progress; this {command} was recorded as skipped (run {run_id})")
        # We hold the lock: a run still marked running belongs to a process that died.
        control.execute(
            sql.SQL(
                "update {}.match_runs set status = 'failed', finished_at = clock_timestamp(),"
                " error = 'interrupted: the process ended before finishing (killed or crashed)'"
                " where status = 'running'"
            ).format(canon)
        )
        handle = RunHandle(run_id=record("running"), control=control)
        try:
            yield handle
        except BaseException as exc:
            message = str(exc) if isinstance(exc, MatcherError) else f"{type(exc).__name__}"
            control.execute(
                sql.SQL(
                    "update {}.match_runs set status = 'failed', finished_at = clock_timestamp(), error = %s"
                    " where run_id = %s"
                ).format(canon),
                (message[:2000], handle.run_id),
            )
            raise
        c = handle.counts
        control.execute(
            sql.SQL(
                "update {}.match_runs set status = 'succeeded', finished_at = clock_timestamp(),"
                " heartbeat_at = clock_timestamp(), processed = %s, matched = %s, new_persons = %s,"
                " origins_written = %s, failed = %s, failed_by_reason = %s, pending = %s, rows_written = %s,"
                " parameters = parameters || %s where run_id = %s"
            ).format(canon),
            (c.get("processed", 0), c.get("matched", 0), c.get("new_persons", 0), c.get("origins_written", 0),
             c.get("failed", 0), json.dumps(c.get("failed_by_reason", {})), c.get("pending", 0),
             c.get("rows_written", 0), json.dumps(c.get("extra", {})), handle.run_id),
        )
    finally:
        control.close()


class Run:
    def __init__(self, db: Database, config: Config, *, command: str = "run", limit: int | None = None):
        self.db, self.cfg, self.command, self.limit = db, config, command, limit
        self.canon = sql.Identifier(config.canon_schema)
        self.ident = sql.Identifier(config.identity_schema)
        self.kill_after_batch = int(os.environ.get("MATCHER_TEST_KILL_AFTER_BATCH", "0") or 0)
        # no link and no attempt yet (a first run): set by _select_due
        self.nothing_attempted = False
        # what a later run may start its choice of due records from (_select_due, _due_since),
        # and how this one chose them (a key of DUE_PATHS)
        self.due_mark: dict | None = None
        self.due_path = ""

    def q(self, text: str, **ids) -> sql.Composed:
        return sql.SQL(text).format(canon=self.canon, ident=self.ident, **ids)

    def execute(self) -> RunResult:
        with locked_run(self.db, self.cfg, self.command, {"limit": self.limit}) as handle:
            r = RunResult(run_id=handle.run_id, status="running")
            with self.db.connect(autocommit=True, application_name=f"matcher-run-{handle.run_id}") as work:
                self._work(work, handle, r)
            handle.counts = {
                "processed": r.processed, "matched": r.matched, "new_persons": r.new_persons,
                "origins_written": r.origins_written, "failed": r.failed, "failed_by_reason": r.failed_by_reason,
                "pending": r.pending, "rows_written": r.rows_written,
                "extra": {"pairs_scored": r.pairs_scored, "pairs_accepted": r.pairs_accepted, "due": self.due_mark,
                          "score_processes": r.score_processes,
                          "timings": {k: round(v, 3) for k, v in r.timings.items()},
                          "detail": {k: round(v, 3) for k, v in r.detail.items()}},
            }
        r.status = "succeeded"
        return r

    # ---------------------------------------------------------------- work
    def _work(self, conn: psycopg.Connection, handle: RunHandle, r: RunResult) -> None:
        t0 = time.perf_counter()
        self.check_contract(conn)
        due_count = self._select_due(conn, r)
        r.timings["select_due"] = time.perf_counter() - t0

        # a run that will rewrite most leads' red-KPI state says so before it writes
        backlog.expect_changes(conn, self.cfg, due_count)
        with _gc_paused():
            pairs = self._read_and_score(conn, r) if due_count else None

            t0 = time.perf_counter()
            self._decide(conn, pairs, r)
            r.timings["cluster"] = time.perf_counter() - t0
            del pairs

        t0 = time.perf_counter()
        self._write_batches(conn, handle, r)
        # analyzed first: the tables a first run loaded in one transaction have no statistics
        # yet (autovacuum saw none of it): at 1M leads the query below took 4.5 s without, 0.34 s with
        with r.clock("write_analyze"):
            self._analyze_written(conn, r.rows_written)
        with r.clock("write_origins_rest"), conn.transaction():
            written = origins.backfill(conn, self.cfg, r.run_id)
        r.origins_written += written
        r.rows_written += written
        # The records left without a link, counted on a connection of their own while this one
        # refreshes the red-KPI state: the count reads only the records and the links, all
        # committed by now, and the refresh writes neither (at 1M leads the count is a pass over
        # 1.5M records, 0.8-1.0 s of every hourly run, whose refresh takes 1.6-2 s).
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._count_pending, r.run_id)
            with r.clock("write_queue"):
                r.rows_written += backlog.refresh(conn, self.cfg, r.run_id)
            r.timings["write"] = time.perf_counter() - t0
            r.pending = pending.result()

    def _count_pending(self, run_id: int) -> int:
        # the view holds exactly the records without a link (it reads the links live)
        with self.db.connect(autocommit=True, application_name=f"matcher-run-{run_id}-pending") as conn:
            return conn.execute(self.q("select count(*) from {ident}.identity_pending_records")).fetchone()[0]

    def _analyze_written(self, conn, rows_written: int) -> None:
        if not rows_written:
            return
        stale = conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
            " where n.nspname = %s and c.relname = any(%s)"
            " and (c.reltuples < 0 or %s >= greatest(1000, 0.1 * c.reltuples))",
            (self.cfg.canon_schema, list(WRITTEN_TABLES), rows_written),
        ).fetchall()
        for (table,) in stale:
            conn.execute(sql.SQL("analyze {}.{}").format(sql.Identifier(self.cfg.canon_schema), sql.Identifier(table)))

    def check_contract(self, conn) -> None:
        for table, columns in CANDIDATE_CONTRACT.items():
            found = dict(
                conn.execute(
                    "select column_name, data_type from information_schema.columns"
                    " where table_schema = %s and table_name = %s",
                    (self.cfg.identity_schema, table),
                ).fetchall()
            )
            if not found:
                raise CandidateContractError(
                    f"{self.cfg.identity_schema}.{table} does not exist: run `dbt build` (or `matcher pipeline`) first"
                )
            wrong = [f"{c} ({t})" for c, t in columns.items() if found.get(c) != t]
            if wrong:
                raise CandidateContractError(
                    f"{self.cfg.identity_schema}.{table} does not match the matcher's contract "
                    f"(missing or mistyped: {', '.join(wrong)}); rebuild it with `dbt build`"
                )

    def _select_due(self, conn, r: RunResult, *, from_mark: bool = True) -> int:
        """Create temp table `due`: the records this run attempts. `from_mark=False` joins every
        pending record with its attempts even where the last complete run's mark would do
        (a test compares both ways)."""
        conn.execute("drop table if exists pg_temp.due")
        # sorted only to take the oldest first under --limit (a sort of every pending record
        # before the filter cost a second at 1M leads)
        oldest_first = " order by p.event_at, p.record_uid limit %s" if self.limit else ""
        # Asked of the canon tables, not of the records: dbt has just built those and nothing
        # has analyzed them (a check through identity_records took 6.4 s where psql took 1 s).
        self.nothing_attempted = not conn.execute(self.q(
            "select exists (select 1 from {canon}.identity_links) or exists (select 1 from {canon}.match_attempts)"
        )).fetchone()[0]
        # The moment the retry interval is measured from, and the highest load id every record
        # version at or below which this run sees: every transaction under the snapshot's xmin
        # has ended, so its rows are visible to the query below (or were rolled back). A later
        # run looks only at what may have become due since (_due_since).
        now, settled = conn.execute(
            "select clock_timestamp(), pg_snapshot_xmin(pg_current_snapshot())::text::bigint - 1").fetchone()
        self.due_mark = {"checked_at": now.isoformat(), "settled_load_id": settled, "complete": not self.limit,
                         "identity_schema": self.cfg.identity_schema}
        since = None if self.nothing_attempted or self.limit or not from_mark else self._last_due_mark(conn, settled)
        self.due_path = "first" if self.nothing_attempted else "join"
        if self.nothing_attempted:
            # a first run: every pending record is due, no attempt to look at (1M leads: 2.5 s
            # with the probes below, 4.0 s with the grouping)
            conn.execute(self.q("create temp table due as select " + DUE_COLUMNS
                                + " from {ident}.identity_pending_records p" + oldest_first),
                         [self.limit] if self.limit else None)
        elif since is not None and self._due_since(conn, since, now):
            self.due_path = "since"
        else:
            # Every pending record with its attempts, in one parallel hash join and aggregate: due
            # when it has no attempt, when its last attempt saw another fingerprint, or when that
            # attempt is older than the retry delay and the attempts are fewer than max_attempts.
            # (A probe of the attempts index per pending record cannot run on more than one core:
            # at 1M leads, 500k pending records after a first run, 2.95 s -> 2.3 s.) Its hash
            # tables and the sort of the grouping take tens of megabytes at that size: work_mem
            # for this statement.
            with conn.transaction():
                conn.execute("set local work_mem = '64MB'")
                conn.execute(
                    self.q(
                        "create temp table due as select " + DUE_COLUMNS + " from ("
                        " select p.record_uid, min(p.source_table) as source_table, min(p.source_pk) as source_pk,"
                        " min(p.record_kind) as record_kind, min(p.fingerprint) as fingerprint,"
                        " min(p.precheck_fail_reason) as precheck_fail_reason, min(p.event_at) as event_at, "
                        + ATTEMPT_SUMMARY +
                        " from {ident}.identity_pending_records p"
                        " left join {canon}.match_attempts a on a.record_uid = p.record_uid"
                        " group by p.record_uid) p"
                        " where " + DUE_RULE
                        + (" order by p.event_at, p.record_uid limit %(limit)s" if self.limit else "")
                    ),
                    {"now": now, "retry": self.cfg.retry_after_hours * 3600, "max_attempts": self.cfg.max_attempts,
                     **({"limit": self.limit} if self.limit else {})},
                )
        conn.execute("alter table due add primary key (record_uid)")
        conn.execute("analyze due")
        n = conn.execute("select count(*) from due").fetchone()[0]
        r.processed = n
        log.info("run %s: %s records due for an attempt (%s)", r.run_id, n, DUE_PATHS[self.due_path])
        return n

    def _last_due_mark(self, conn, settled: int) -> dict | None:
        """The due mark of the last complete run (no --limit, succeeded) when this run may start
        from it: made under the same retry policy, over the same records, in this cluster."""
        row = conn.execute(self.q(
            "select parameters -> 'due', parameters -> 'retry_after_hours', parameters -> 'max_attempts'"
            " from {canon}.match_runs"
            " where command = 'run' and status = 'succeeded' and (parameters -> 'due' ->> 'complete')::boolean"
            " order by run_id desc limit 1")).fetchone()
        if row is None:
            return None
        mark, retry, max_attempts = row
        if (float(retry) != self.cfg.retry_after_hours or int(max_attempts) != self.cfg.max_attempts
                or mark.get("identity_schema") != self.cfg.identity_schema
                # load ids are transaction ids: lower ones now are another cluster's (a restore)
                or int(mark["settled_load_id"]) > settled):
            return None
        return mark

    def _due_since(self, conn, mark: dict, now) -> bool:
        """Choose the due records from what may have become due since the last complete run
        (`mark`); False, with nothing chosen, when that is too many to look up one by one.

        That run attempted every record then due, so a record due now either was rewritten
        since (another fingerprint, or new: a load id above the mark's settled one), or its
        last attempt has since passed the retry interval (it lies between the mark's moment and
        now, both less the interval). A record with no attempt is new or was rewritten since.
        Those are looked up by index and the whole rule applied to them; at 1M leads and 10k
        new leads this replaces a join of all 500k pending records with their attempts
        (2.2-2.8 s, and growing with the data) by a few thousand lookups. A full refresh of the
        identity models rewrites every record: the join is then the cheaper way."""
        conn.execute("drop table if exists pg_temp.due_candidates")
        params = {"settled": int(mark["settled_load_id"]), "since": mark["checked_at"], "now": now,
                  "retry": self.cfg.retry_after_hours * 3600, "max_attempts": self.cfg.max_attempts,
                  "many": DUE_LOOKUPS_MAX + 1}
        conn.execute(self.q(
            "create temp table due_candidates as"
            " select record_uid from {ident}.identity_pending_records where load_id > %(settled)s"
            " union"
            " select record_uid from {canon}.match_attempts"
            " where attempted_at >= %(since)s::timestamptz - make_interval(secs => %(retry)s)"
            "   and attempted_at < %(now)s - make_interval(secs => %(retry)s)"
            " limit %(many)s"), params)
        if conn.execute("select count(*) from due_candidates").fetchone()[0] > DUE_LOOKUPS_MAX:
            conn.execute("drop table due_candidates")
            return False
        conn.execute("analyze due_candidates")
        conn.execute(self.q(
            "create temp table due as select " + DUE_COLUMNS + " from due_candidates c"
            " join {ident}.identity_pending_records p on p.record_uid = c.record_uid"
            " cross join lateral (select " + ATTEMPT_SUMMARY
            + " from {canon}.match_attempts a where a.record_uid = p.record_uid) s"
            " where " + DUE_RULE), params)
        conn.execute("drop table due_candidates")
        return True

    def _read_and_score(self, conn, r: RunResult) -> dict[str, np.ndarray]:
        """Score every candidate pair that touches a due record; keep accepted pairs and per-node best scores.

        Pairs are read as two int8 columns through one binary COPY; the attributes of the records
        they involve are read once per record (not once per pair) from identity_records, one
        column at a time; pairs are then scored column-wise in batches of `read_batch_size`.
        """
        t_read = time.perf_counter()
        # Due records have no link, so every pair touching one may change something.
        with r.clock("read_pairs"):
            pairs = self._read_pairs(conn)
        with r.clock("read_index"):
            uids, inverse = dense.dense_index(pairs)
            del pairs
        with r.clock("read_records"):
            rec_uid, rec_freq, rec_person, values, codes = self._read_records(conn, uids)
        with r.clock("read_index"):
            li, ri = pair_positions(uids, inverse, rec_uid)
            del inverse
        r.timings["read"] = time.perf_counter() - t_read
        return self._score(li, ri, rec_uid, rec_freq, rec_person, values, codes, r)

    def _read_pairs(self, conn) -> np.ndarray:
        # In a first run (no link, no attempt, no --limit) every live record is due, so every pair
        # touches one: read the table whole instead of semi-joining it with the due records twice
        # (1M leads, 11.6M pairs: 7.0-7.6 s -> 1.8 s). _select_due found whether it is one.
        everything_due = not self.limit and self.nothing_attempted
        # either read returns each pair at most once: the table's size (as the planner sees it) bounds it
        bound = self._planned_rows(conn, "identity_candidates")
        if everything_due:
            return copyio.read_int64(conn, self.q("select left_uid, right_uid from {ident}.identity_candidates"), 2,
                                     max_rows=bound)
        # The pairs of a few due records are index lookups into tables dbt has just appended to
        # (their pages are cached): priced as random reads of disk pages, the lookups by
        # right_uid lost to a scan of every pair (1M leads, 10k due records, 155k pairs: 1.5 s
        # with the scan, 0.18 s with the lookups). The planner still scans when many are due.
        with conn.transaction():
            conn.execute("set local random_page_cost = 1.1")
            return copyio.read_int64(conn, self.q(
                "select c.left_uid, c.right_uid from {ident}.identity_candidates c"
                " where exists (select 1 from due d where d.record_uid = c.left_uid)"
                " union all"
                " select c.left_uid, c.right_uid from {ident}.identity_candidates c"
                " where exists (select 1 from due d where d.record_uid = c.right_uid)"
                "   and not exists (select 1 from due d where d.record_uid = c.left_uid)"), 2, max_rows=bound)

    def _planned_rows(self, conn, table: str) -> int:
        """The planner's count of the rows of `table` (in the identity schema): its statistics, no scan."""
        plan = conn.execute(self.q("explain (format json) select from {ident}.{table}",
                                   table=sql.Identifier(table))).fetchone()[0]
        return int((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"])

    def _live_records_estimate(self, conn) -> int:
        return self._planned_rows(conn, "identity_records")

    def _read_records(self, conn, uids: np.ndarray):
        """What the records `uids` (sorted) carry, once per record and sorted by record_uid: (their
        uids, name frequencies, person keys or None, each field's Values, their codes). The uids are
        those still live, or every live record when nearly all of them are among `uids`."""
        conn.execute("drop table if exists pg_temp.involved, pg_temp.attrs")
        columns = (
            "r.record_uid, coalesce(r.phone, '') as phone, coalesce(r.document_number, '') as document,"
            " coalesce(r.email, '') as email, coalesce(r.plate, '') as plate,"
            " coalesce(r.claim_driver_id, '') as claim, coalesce(r.full_name, '') as name,"
            " coalesce(r.name_frequency, 0)::bigint as name_frequency, coalesce(l.person_key::text, '') as person")
        if len(uids) <= RECORD_ARRAY_MAX:
            # The records as one array parameter: each record row is checked against it by a hash
            # lookup while it is scanned, on every core (a temporary table, which the join below
            # reads, keeps the whole query on one), and only those rows go on to the joins. 1M
            # leads, 147k records: 2.4 s -> 1.1 s; 421k: 2.8 s -> 1.8 s; 1.56M: 3.6 s -> 6.7 s.
            conn.execute(self.q(
                "create temp table attrs as select " + columns
                + " from {ident}.identity_records r"
                " left join {canon}.identity_links l on l.record_uid = r.record_uid"
                " where r.record_uid = any(%s::bigint[])"
                " order by r.record_uid"), (uids.tolist(),))
        elif 2 * len(uids) >= self._live_records_estimate(conn):
            # Nearly every live record is involved (a first run: 98.8% of them at 1M leads): read
            # them all in one scan on every core, instead of joining a temporary table of their
            # ids, which keeps the query on one (1M leads: 4.0-4.5 s -> 2.95 s, and no COPY of
            # 1.5M ids). The caller finds the pairs' records among them by uid; the others are
            # never scored, and at most as many again as those involved.
            conn.execute(self.q(
                "create temp table attrs as select " + columns
                + " from {ident}.identity_records r"
                " left join {canon}.identity_links l on l.record_uid = r.record_uid"
                " order by r.record_uid"))
        else:
            conn.execute("create temp table involved (record_uid bigint not null)")
            copyio.write_int64(conn, sql.Identifier("involved"), ["record_uid"], [uids])
            conn.execute(self.q(
                "create temp table attrs as select " + columns
                + " from involved i"
                " join {ident}.identity_records r on r.record_uid = i.record_uid"
                " left join {canon}.identity_links l on l.record_uid = i.record_uid"
                " order by i.record_uid"))
        # attrs was written in record_uid order and a temporary table is read in the order it was
        # written (its scans are never synchronized or parallel), so each column is read without
        # sorting it again (1.5M records: 0.25 s against 0.73 s a column); were the uids read out
        # of order, every column is sorted as before
        # Each column comes as one value (copyio: a COPY's message per row cost more than the
        # query); the text columns only in that same scan order, so not when it had to be sorted.
        order = sql.SQL("")
        num = copyio.read_int64(conn, sql.SQL("select record_uid, name_frequency from attrs{}").format(order), 2,
                                max_rows=len(uids))
        rows: int | None = len(num)
        if len(num) > 1 and not bool(np.all(num[1:, 0] > num[:-1, 0])):
            order, rows = sql.SQL(" order by record_uid"), None
            num = copyio.read_int64(conn, sql.SQL("select record_uid, name_frequency from attrs{}").format(order), 2)
        rec_uid, rec_freq = num[:, 0], num[:, 1].astype(np.int32)
        # each field's distinct values once, and every record's code into them
        values, codes = {}, {}
        for f in FIELDS:
            strings = copyio.read_text(conn, sql.SQL("select {} from attrs{}").format(sql.Identifier(f), order), rows=rows)
            values[f], (codes[f],) = scoring.Values.encode(strings)
        rec_person = np.array(copyio.read_text(conn, sql.SQL("select person from attrs{}").format(order), rows=rows),
                              dtype=object)
        rec_person[rec_person == ""] = None
        conn.execute("drop table if exists pg_temp.attrs, pg_temp.involved")
        return rec_uid, rec_freq, rec_person, values, codes

    def _score(self, li, ri, rec_uid, rec_freq, rec_person, values, codes, r: RunResult) -> dict[str, np.ndarray]:
        t_score = time.perf_counter()
        step = self.cfg.read_batch_size
        starts = list(range(0, len(li), step))
        keys = ("li", "ri", "score", "prob", "rule", "name_sim", *FIELDS)

        def score_batches(part: list[int]) -> tuple[dict[str, list], np.ndarray, int]:
            """The accepted pairs of the batches starting at `part`, each record's best score
            over them, and how many pairs they held."""
            accepted: dict[str, list] = {k: [] for k in keys}
            best = np.full(len(rec_uid), -np.inf, dtype=np.float64)
            scored = 0
            for start in part:
                bl, br = li[start:start + step], ri[start:start + step]
                batch = scoring.CodedPairs(
                    values, {f: c[bl] for f, c in codes.items()}, {f: c[br] for f, c in codes.items()},
                    name_frequency=np.maximum(rec_freq[bl], rec_freq[br]),
                )
                s = scoring.score_pairs(batch, self.cfg)
                scored += len(bl)
                # ufunc.at takes its fast path only when the operands match the target's dtype
                # (float64 values, intp indices): 30 ms -> 1.3 ms per 200k-pair batch
                batch_score = s.score.astype(np.float64)
                np.maximum.at(best, bl.astype(np.intp), batch_score)
                np.maximum.at(best, br.astype(np.intp), batch_score)
                keep = np.flatnonzero(s.accepted)
                if keep.size:
                    accepted["li"].append(bl[keep])
                    accepted["ri"].append(br[keep])
                    accepted["score"].append(s.score[keep])
                    accepted["prob"].append(s.probability[keep])
                    accepted["rule"].append(s.rule[keep])
                    accepted["name_sim"].append(s.name_similarity[keep])
                    for f in FIELDS:
                        accepted[f].append(s.levels[f][keep])
            return {k: [np.concatenate(v)] if v else [] for k, v in accepted.items()}, best, scored

        processes = self._score_processes(len(li), len(starts))
        if processes > 1:
            # the caches once, here, shared with the children (matcher/forked.py)
            scoring.warm(values)
            parts = [[int(x) for x in part] for part in np.array_split(np.array(starts), processes)]
            results, r.score_children_mb = forked.map_forked(score_batches, parts)
        else:
            results = [score_batches(starts)]
        r.score_processes = processes
        best = np.maximum.reduce([b for _, b, _ in results])
        r.pairs_scored += sum(n for _, _, n in results)
        r.timings["score"] = time.perf_counter() - t_score
        out = {}
        for k in keys:
            # the parts in order: the accepted pairs come out as one process would have listed them
            chunks = [chunk for accepted, _, _ in results for chunk in accepted[k]]
            out[k] = np.concatenate(chunks) if chunks else np.array([])
        ai, bi = out.pop("li").astype(np.int64), out.pop("ri").astype(np.int64)
        out["left"], out["right"] = rec_uid[ai], rec_uid[bi]
        out["l_person"], out["r_person"] = rec_person[ai], rec_person[bi]
        scored = np.isfinite(best)
        out["seen_nodes"], out["seen_best"] = rec_uid[scored], best[scored].astype(np.float32)
        r.pairs_accepted = len(out["left"])
        return out

    def _score_processes(self, pairs: int, batches: int) -> int:
        """How many processes score this run's pairs (matcher/forked.py): `score_processes` of
        the configuration, or with 0 (the default) one per CPU, at most SCORE_PROCESSES_MAX and
        one per SCORE_PAIRS_PER_PROCESS pairs (forking costs more than a small run's scoring);
        never more than there are batches, and one where forking is not available."""
        wanted = self.cfg.score_processes or min(forked.cpu_count(), SCORE_PROCESSES_MAX,
                                                 max(1, pairs // SCORE_PAIRS_PER_PROCESS))
        return max(1, min(wanted, batches)) if forked.available() else 1

    def _override_edges(self, conn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rows = conn.execute(
            self.q(
                "select o.decision, " + RECORD_UID_SQL.format(t="o.left_source_table", k="o.left_source_pk") + ", "
                + RECORD_UID_SQL.format(t="o.right_source_table", k="o.right_source_pk") + ","
                " ll.person_key::text, rl.person_key::text"
                " from {canon}.match_overrides o"
                " left join {canon}.identity_links ll on ll.record_uid = "
                + RECORD_UID_SQL.format(t="o.left_source_table", k="o.left_source_pk")
                + " left join {canon}.identity_links rl on rl.record_uid = "
                + RECORD_UID_SQL.format(t="o.right_source_table", k="o.right_source_pk")
            )
        ).fetchall()
        dnl = [(a, b) for d, a, b, _, _ in rows if d == "do_not_link"]
        force = [(a, b, pa, pb) for d, a, b, pa, pb in rows if d == "force_link" and (pa is None or pb is None)]
        return dnl, force

    def _decide(self, conn, acc: dict | None, r: RunResult) -> None:
        """Cluster accepted pairs and upload one decision row per node into temp table `nodes`."""
        conn.execute("drop table if exists pg_temp.nodes")
        conn.execute(
            "create temp table nodes (record_uid bigint primary key, component bigint not null,"
            " batch integer not null, decision smallint not null, person_key uuid,"
            " match_rule text, match_score real, probability real, name_similarity real, "
            + LEVEL_COLUMNS_DDL + ", component_size integer, conflict_kind text, conflict_persons uuid[])"
        )
        conn.execute("drop table if exists pg_temp.seen")
        conn.execute("create temp table seen (record_uid bigint primary key, best_score real)")
        if acc is None:
            return
        copyio.write_columns(conn, sql.Identifier("seen"), {
            "record_uid": acc["seen_nodes"].astype(np.int64), "best_score": acc["seen_best"].astype(np.float32)})

        left, right = acc["left"].astype(np.int64), acc["right"].astype(np.int64)
        score = acc["score"].astype(np.float32)
        rule_names = np.array([rl.name for rl in self.cfg.rules] + ["force_link"], dtype=object)
        rule = acc["rule"].astype(np.int16)
        l_person, r_person = acc["l_person"], acc["r_person"]
        levels = {f: acc[f].astype(np.int16) for f in FIELDS}
        prob, name_sim = acc["prob"].astype(np.float32), acc["name_sim"].astype(np.float32)

        dnl, force = self._override_edges(conn)
        if dnl and len(left):
            blocked = {(min(a, b), max(a, b)) for a, b in dnl}
            keep = np.array([(min(a, b), max(a, b)) not in blocked for a, b in zip(left.tolist(), right.tolist())], dtype=bool)
            left, right, score, rule, prob, name_sim = left[keep], right[keep], score[keep], rule[keep], prob[keep], name_sim[keep]
            l_person, r_person = l_person[keep], r_person[keep]
            levels = {f: v[keep] for f, v in levels.items()}
        if force:
            fl = np.array([a for a, _, _, _ in force], dtype=np.int64)
            fr = np.array([b for _, b, _, _ in force], dtype=np.int64)
            left, right = np.concatenate([left, fl]), np.concatenate([right, fr])
            score = np.concatenate([score, np.full(len(force), 99.0, np.float32)])
            prob = np.concatenate([prob, np.ones(len(force), np.float32)])
            name_sim = np.concatenate([name_sim, np.full(len(force), np.nan, np.float32)])
            rule = np.concatenate([rule, np.full(len(force), len(self.cfg.rules), np.int16)])
            l_person = np.concatenate([l_person, np.array([p for _, _, p, _ in force], dtype=object)])
            r_person = np.concatenate([r_person, np.array([p for _, _, _, p in force], dtype=object)])
            # a human decision has no field levels: -1 renders as null in the evidence
            levels = {f: np.concatenate([v, np.full(len(force), -1, np.int16)]) for f, v in levels.items()}
        if not len(left):
            return

        # Components over unresolved records only: a linked record is an anchor for its person,
        # never a bridge, so a conflict elsewhere cannot swallow a record that plainly belongs
        # to one person.
        l_open, r_open = l_person == None, r_person == None  # noqa: E711
        open_nodes = np.unique(np.concatenate([left[l_open], right[r_open]]))
        both_open = l_open & r_open
        nodes, labels = cluster.connected_components(
            np.concatenate([left[both_open], open_nodes]), np.concatenate([right[both_open], open_nodes])
        )
        comp_size = np.bincount(labels, minlength=len(nodes))[labels]
        # (component, person) incidences from edges that join an open record to a linked one
        touch_label, touch_person = [], []
        for uid_side, person_side, sel_edges in ((left, r_person, l_open & ~r_open), (right, l_person, r_open & ~l_open)):
            touch_label.append(labels[np.searchsorted(nodes, uid_side[sel_edges])])
            touch_person.append(person_side[sel_edges].astype(str))
        t_label = np.concatenate(touch_label) if touch_label else np.array([], dtype=np.int64)
        t_person = np.concatenate(touch_person) if touch_person else np.array([], dtype=str)
        person_names, person_idx = np.unique(t_person, return_inverse=True)
        pairs_lp = np.unique(np.stack([t_label, person_idx.astype(np.int64)], axis=1), axis=0) if len(t_label) else np.zeros((0, 2), np.int64)
        persons_per_comp = np.bincount(pairs_lp[:, 0], minlength=len(nodes)) if len(pairs_lp) else np.zeros(len(nodes), np.int64)
        first_person = np.full(len(nodes), -1, dtype=np.int64)
        if len(pairs_lp):
            first_person[pairs_lp[::-1, 0]] = pairs_lp[::-1, 1]  # any one person of the component
        n_persons = persons_per_comp[labels]

        all_nodes, all_best = cluster.best_edge_per_node(left, right, score)
        best_edge = all_best[np.searchsorted(all_nodes, nodes)]
        multiple = n_persons >= 2
        oversized = ~multiple & (comp_size + n_persons > self.cfg.max_component_size)
        decision = np.where(multiple | oversized, CONFLICT, np.where(n_persons == 1, LINK_EXISTING, LINK_NEW)).astype(np.int16)
        person_key = np.full(len(nodes), None, dtype=object)
        single = decision == LINK_EXISTING
        person_key[single] = person_names[first_person[labels[single]]]
        conflict_kind = np.full(len(nodes), None, dtype=object)
        conflict_kind[multiple] = "multiple_persons"
        conflict_kind[oversized] = "oversized_component"
        conflict_persons = np.full(len(nodes), None, dtype=object)
        conflicted = np.flatnonzero(multiple | oversized)
        if conflicted.size:
            persons_of: dict[int, list] = {}
            involved = pairs_lp[np.isin(pairs_lp[:, 0], labels[conflicted])]
            for lab, pidx in involved.tolist():
                persons_of.setdefault(lab, []).append(str(person_names[pidx]))
            for i in conflicted.tolist():
                conflict_persons[i] = sorted(persons_of.get(int(labels[i]), []))

        # batches: whole components, about batch_size records each
        comp_ids, comp_inverse = np.unique(labels, return_inverse=True)
        comp_counts = np.bincount(comp_inverse)
        comp_batch = (np.cumsum(comp_counts) - 1) // self.cfg.batch_size
        batch = comp_batch[comp_inverse]

        # Upload: the numeric columns of every node in one binary COPY laid out by numpy (a
        # million nodes in a first run at 1M leads), the person and conflict columns only for
        # the nodes that have them, then one insert joins them into `nodes`.
        e = best_edge
        conn.execute("drop table if exists pg_temp.nodes_numeric, pg_temp.nodes_text")
        conn.execute(
            "create temp table nodes_numeric (record_uid bigint, component bigint, batch integer, decision smallint,"
            " rule smallint, match_score real, probability real, name_similarity real, "
            + LEVEL_COLUMNS_DDL + ", component_size integer)")
        copyio.write_columns(conn, sql.Identifier("nodes_numeric"), {
            "record_uid": nodes.astype(np.int64), "component": nodes[labels].astype(np.int64),
            "batch": batch.astype(np.int32), "decision": decision.astype(np.int16), "rule": rule[e].astype(np.int16),
            "match_score": score[e].astype(np.float32), "probability": prob[e].astype(np.float32),
            "name_similarity": name_sim[e].astype(np.float32),  # NaN: no name compared
            **{f: levels[f][e].astype(np.int16) for f in FIELDS},
            "component_size": comp_size.astype(np.int32),
        })
        conn.execute("create temp table nodes_text (record_uid bigint, person_key uuid, conflict_kind text,"
                     " conflict_persons uuid[])")
        with_text = np.flatnonzero(single | multiple | oversized)
        if with_text.size:
            with conn.cursor() as cur, cur.copy(
                    "copy nodes_text (record_uid, person_key, conflict_kind, conflict_persons) from stdin") as cp:
                for i in with_text.tolist():
                    cp.write_row((int(nodes[i]), person_key[i], conflict_kind[i], conflict_persons[i]))
        conn.execute(
            "insert into nodes (record_uid, component, batch, decision, person_key, match_rule, match_score,"
            " probability, name_similarity, " + ", ".join(FIELDS) + ", component_size,"
            " conflict_kind, conflict_persons)"
            " select n.record_uid, n.component, n.batch, n.decision, t.person_key, (%s::text[])[n.rule + 1],"
            " n.match_score, n.probability, nullif(n.name_similarity, 'NaN'), "
            + ", ".join(f"n.{f}" for f in FIELDS) + ", n.component_size, t.conflict_kind, t.conflict_persons"
            " from nodes_numeric n left join nodes_text t using (record_uid)",
            (list(rule_names),))
        conn.execute("drop table nodes_numeric, nodes_text")
        conn.execute("analyze nodes")

    def _add_singletons(self, conn) -> None:
        """Due records of a singleton kind (drivers) that matched nothing become their own person."""
        if not self.cfg.singleton_person_kinds:
            return
        conn.execute(
            "insert into nodes (record_uid, component, batch, decision, match_rule, match_score, probability,"
            " component_size)"
            " select d.record_uid, d.record_uid,"
            " coalesce((select max(batch) + 1 from nodes), 0) + (row_number() over (order by d.record_uid) - 1) / %s,"
            " 1, 'singleton_' || d.record_kind, 0, 1, 1"
            " from due d"
            " where d.record_kind = any(%s) and d.precheck_fail_reason is null"
            " and not exists (select 1 from nodes n where n.record_uid = d.record_uid)",
            (self.cfg.batch_size, list(self.cfg.singleton_person_kinds)),
        )

    def _write_batches(self, conn, handle: RunHandle, r: RunResult) -> None:
        """Per batch, one transaction: new persons, links, conflicts, attempts for its records."""
        with r.clock("write_prepare"):
            self._prepare_work(conn)
        batches = [b for (b,) in conn.execute("select distinct batch from work order by 1").fetchall()]
        if not self.nothing_attempted:
            self._write_each_batch(conn, handle, r, batches)
            return
        # A first run (no link, no attempt yet) writes every batch in one transaction: the tables
        # it fills are empty, so their rows go in first and their indexes and foreign keys are
        # built after (matcher/bulkload.py), instead of being updated and checked row by row.
        # Killed half-way, it leaves those tables as they were, indexes included, and runs again whole.
        with conn.transaction():
            with r.clock("write_unindex"):
                unindexed, rebuild = bulkload.unindex_empty(
                    conn, self.cfg.canon_schema, FIRST_RUN_TABLES, what="first run", logger=log,
                    keep_primary_keys=True)
            self._write_each_batch(conn, handle, r, batches, unindexed)
            with r.clock("write_reindex"):
                for statement in rebuild:
                    conn.execute(statement)

    def _prepare_work(self, conn) -> None:
        self._add_singletons(conn)
        # One work row per decided record, with what the writes need from identity_pending_records
        # as it was before this run wrote anything (it is a view: a record leaves it as soon as its
        # link is written), whether it was due, and an index on the batch each statement reads.
        conn.execute("drop table if exists pg_temp.work")
        # A new component's person key derives from the smallest record key among its new-person
        # records (a component is never split across batches, so this is the same per batch).
        cols = [name for (name,) in conn.execute(
            "select attname from pg_attribute where attrelid = 'pg_temp.nodes'::regclass"
            " and attnum > 0 and not attisdropped and attname <> 'person_key' order by attnum")]
        conn.execute(self.q(
            "create temp table work as select {cols},"
            " case when n.decision = 1 then md5(min(p.source_table || ':' || p.source_pk)"
            "   filter (where n.decision = 1) over (partition by n.component))::uuid"
            " else n.person_key end as person_key,"
            " p.source_table, p.source_pk, p.event_at, p.fingerprint,"
            # due is joined, not probed once per node: at 1M leads the probes (1M index lookups
            # into a temporary table, each a heap visit too) made this statement 13-15 s, 8-9 s now
            " d.record_uid is not null as is_due"
            " from nodes n join {ident}.identity_pending_records p using (record_uid)"
            " left join due d on d.record_uid = n.record_uid",
            cols=sql.SQL(", ").join(sql.Identifier("n", c) for c in cols)))
        conn.execute("create index on work (batch)")
        conn.execute("analyze work")

    def _write_each_batch(self, conn, handle: RunHandle, r: RunResult, batches: list[int],
                          unindexed: frozenset[str] = frozenset()) -> None:
        level_arrays = {f: "array[" + ",".join(f"'{lv}'" for lv in LEVELS[f]) + "]" for f in FIELDS}
        evidence = (
            "jsonb_build_object('rule', n.match_rule, 'score', round(n.match_score::numeric, 2),"
            " 'name_similarity', round(n.name_similarity::numeric, 1),"
            + ", ".join(f"'{f}', ({level_arrays[f]})[n.{f} + 1]" for f in FIELDS)
            + ")"
        )
        fixed_rules = [(rule.name, rule.confidence) for rule in self.cfg.rules] + [
            ("force_link", "high"), ("singleton_driver", "high"), ("singleton_lead", "high")]
        # a case over the rule names (validated by config: [a-z][a-z0-9_]*), not a sub-select
        # of a values list per link: 2.0 s -> 0.2 s per million links
        confidence = (
            "case n.match_rule "
            + " ".join(f"when '{name}' then '{conf}'" for name, conf in fixed_rules)
            + " end"
        )
        statements = [
            # the persons it created are noted: their origin comes from their work rows below
            "with created as (insert into {canon}.identity_registry (person_key, created_by_run)"
            " select distinct person_key, %(run)s from work n where n.batch = %(b)s and n.decision = 1"
            " on conflict (person_key) do nothing returning person_key)"
            " insert into batch_created (person_key) select person_key from created",
            "insert into {canon}.identity_links as l (source_table, source_pk, record_uid, person_key, match_rule,"
            " match_score, confidence, evidence, source_event_at, record_fingerprint, run_id)"
            " select n.source_table, n.source_pk, n.record_uid, n.person_key, n.match_rule, n.probability,"
            " " + confidence + ", " + evidence + ", n.event_at, n.fingerprint, %(run)s"
            " from work n"
            " where n.batch = %(b)s and n.decision in (1, 2)"
            # in record_uid order, the primary key's order: its leaf pages are visited once each
            # (1M leads: 1M links into the primary key alone took 11.4 s in random order, 4.5 s sorted)
            " order by n.record_uid"
            # a first run's links go into a table found empty and held exclusively by its
            # transaction, one per record: a plain insert, not an upsert (a link there already
            # would fail the run on the primary key, and the next run would take the upsert)
            + ("" if "identity_links" in unindexed else
            " on conflict (record_uid) do update set person_key = excluded.person_key,"
            " match_rule = excluded.match_rule, match_score = excluded.match_score,"
            " confidence = excluded.confidence, evidence = excluded.evidence,"
            " source_event_at = excluded.source_event_at, record_fingerprint = excluded.record_fingerprint,"
            " run_id = excluded.run_id, updated_at = clock_timestamp()"
            " where (l.person_key, l.match_rule, l.confidence, l.evidence, l.source_event_at, l.record_fingerprint)"
            " is distinct from (excluded.person_key, excluded.match_rule, excluded.confidence, excluded.evidence,"
            " excluded.source_event_at, excluded.record_fingerprint)"),
            "insert into {canon}.match_conflicts (run_id, record_uid, source_table, source_pk, conflict_kind, component_size,"
            " person_keys)"
            " select %(run)s, n.record_uid, n.source_table, n.source_pk, n.conflict_kind, n.component_size,"
            " coalesce(n.conflict_persons, '{{}}')"
            " from work n"
            " where n.batch = %(b)s and n.decision = 3 and n.is_due"
            " on conflict do nothing",
            # attempts of this batch's records: matched ones, and due ones in conflicts
            "insert into {canon}.match_attempts (run_id, record_uid, source_table, source_pk, record_fingerprint,"
            " outcome, fail_reason, best_score, match_rule, person_key)"
            " select %(run)s, n.record_uid, n.source_table, n.source_pk, n.fingerprint,"
            " case when n.decision = 3 then 'failed' else 'matched' end,"
            " case when n.decision = 3 then 'conflict' end, n.match_score, n.match_rule, n.person_key"
            " from work n"
            " where n.batch = %(b)s and (n.decision in (1, 2) or n.is_due)",
        ]
        # Origins of the persons this batch touched, in its transaction. A person it created has
        # no link but this batch's, so the rule is applied to those work rows; the others (a
        # person linked to before, or one whose key was already registered) by their links.
        created_rows = sql.SQL(
            "(select n.person_key, n.source_table, n.source_pk, n.event_at from work n"
            " join batch_created c using (person_key) where n.batch = %(b)s and n.decision = 1)")
        others = ("select person_key from work where batch = %(b)s and person_key is not null"
                  " except select person_key from batch_created")
        other_persons = sql.SQL("l.person_key in (" + others + ")")
        # A first run's batches create every person they link to, and there are no others: the
        # query of their links would then read the links table whole for nothing, once a batch
        # (it has no index on persons while a first run loads it): 1M leads, the origins of a first
        # run's batches 12.8 s -> 6.0 s
        any_others = "select exists (" + others + ")"
        conn.execute("drop table if exists pg_temp.batch_created")
        conn.execute("create temp table batch_created (person_key uuid not null)")
        for b in batches:
            with conn.transaction():
                conn.execute("truncate batch_created")
                counts = []
                for name, stmt in zip(STATEMENT_NAMES, statements):
                    with r.clock(name):
                        cur = conn.execute(self.q(stmt), {"b": b, "run": r.run_id})
                    counts.append(max(cur.rowcount, 0))
                with r.clock("write_origins"):
                    written = origins.write_new(conn, self.cfg, r.run_id, created_rows, {"b": b})
                    if conn.execute(any_others, {"b": b}).fetchone()[0]:
                        written += origins.backfill(conn, self.cfg, r.run_id, other_persons, {"b": b})
                r.new_persons += counts[0]
                r.matched += counts[1]
                r.rows_written += sum(counts) + written
                r.origins_written += written
            handle.heartbeat(self.cfg.canon_schema)
            if self.kill_after_batch and b + 1 >= self.kill_after_batch:
                log.warning("test hook: killing the matcher after batch %s", b)
                os.kill(os.getpid(), signal.SIGKILL)

        # due records that ended without a link or a conflict: their fail reason
        with r.clock("write_failed"), conn.transaction():
            cur = conn.execute(
                self.q(
                    "insert into {canon}.match_attempts (run_id, record_uid, source_table, source_pk,"
                    " record_fingerprint, outcome, fail_reason, best_score)"
                    " select %(run)s, d.record_uid, d.source_table, d.source_pk, d.fingerprint, 'failed',"
                    " coalesce(d.precheck_fail_reason, case when s.record_uid is null then 'no_candidates'"
                    "   else 'below_threshold' end), s.best_score"
                    " from due d left join seen s using (record_uid)"
                    " where not exists (select 1 from nodes n where n.record_uid = d.record_uid)"
                ),
                {"run": r.run_id},
            )
            r.rows_written += max(cur.rowcount, 0)
        reasons = conn.execute(
            self.q(
                "select fail_reason, count(*) from {canon}.match_attempts where run_id = %s and outcome = 'failed'"
                " group by 1"
            ),
            (r.run_id,),
        ).fetchall()
        r.failed_by_reason = dict(Counter({k: v for k, v in reasons}))


def run(db: Database, config: Config, *, limit: int | None = None, command: str = "run") -> RunResult:
    return Run(db, config, command=command, limit=limit).execute()
