"""The whole job in one call: database up, tables ready, (demo data), dbt build, matcher run."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from matcher import dbt, demo, runner
from matcher.config import Config
from matcher.db import Database
from matcher.errors import RawTablesMissing
from matcher.evaluate import Quality, evaluate
from matcher.migrate import migrate

log = logging.getLogger(__name__)

REQUIRED_RAW = ("cabinet_leads", "scout_registrations", "fleet_migrations", "drivers", "driver_activity", "claims")


@dataclass
class PipelineResult:
    run: runner.RunResult
    summary: dict
    quality: Quality | None
    timings: dict[str, float] = field(default_factory=dict)


def missing_raw_tables(conn: psycopg.Connection, schema: str) -> list[str]:
    present = {
        r[0]
        for r in conn.execute(
            "select table_name from information_schema.tables where table_schema = %s", (schema,)
        ).fetchall()
    }
    return [t for t in REQUIRED_RAW if t not in present]


def raw_is_empty(conn: psycopg.Connection, schema: str) -> bool:
    if missing_raw_tables(conn, schema):
        return True
    return conn.execute(
        sql.SQL("select not exists (select 1 from {}.cabinet_leads)").format(sql.Identifier(schema))
    ).fetchone()[0]


def check_raw(conn: psycopg.Connection, schema: str) -> None:
    missing = missing_raw_tables(conn, schema)
    if missing:
        raise RawTablesMissing(
            f"raw tables missing in schema {schema!r}: {', '.join(missing)} "
            "(load your data there, point MATCHER_RAW_SCHEMA at it, or run `matcher pipeline --demo`)"
        )


def summarize(conn: psycopg.Connection, cfg: Config) -> dict:
    canon, ident = sql.Identifier(cfg.canon_schema), sql.Identifier(cfg.identity_schema)
    q = lambda text: conn.execute(sql.SQL(text).format(canon=canon, ident=ident)).fetchone()[0]  # noqa: E731
    unresolved = conn.execute(
        sql.SQL(
            "select coalesce(a.fail_reason, 'not_attempted'), count(*) from {ident}.identity_pending_records p"
            " left join lateral (select fail_reason from {canon}.match_attempts a"
            "   where a.record_uid = p.record_uid"
            "   order by attempted_at desc limit 1) a on true"
            " where not exists (select 1 from {canon}.identity_links l where l.record_uid = p.record_uid)"
            " group by 1 order by 2 desc"
        ).format(canon=canon, ident=ident)
    ).fetchall()
    return {
        "records": q("select count(*) from intermediate.int_identity__records where not is_deleted"),
        "persons": q("select count(*) from {canon}.identity_registry"),
        "links": q("select count(*) from {canon}.identity_links"),
        "origins": q("select count(*) from {canon}.identity_origin"),
        "unresolved_by_reason": dict(unresolved),
    }


def run_pipeline(
    db: Database,
    project: Path,
    cfg: Config,
    *,
    demo_spec: demo.DemoSpec | None = None,
    regenerate: bool = False,
    dbt_quiet: bool = False,
    labels: str | None = None,
) -> PipelineResult:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with db.connect(autocommit=True) as conn:
        migrate(conn, cfg.canon_schema)
        if demo_spec is not None and (regenerate or raw_is_empty(conn, cfg.raw_schema)):
            demo.create_raw_schema(conn, cfg.raw_schema)
            counts = demo.generate(conn, demo_spec, cfg.raw_schema)
            log.info("demo data written: %s", counts)
            timings["generate"] = time.perf_counter() - t
        check_raw(conn, cfg.raw_schema)
    t = time.perf_counter()
    dbt.invoke(db, project, ["build"], quiet=dbt_quiet)
    timings["dbt_build"] = time.perf_counter() - t
    t = time.perf_counter()
    result = runner.run(db, cfg)
    timings["matcher_run"] = time.perf_counter() - t
    with db.connect(autocommit=True) as conn:
        summary = summarize(conn, cfg)
        quality = None
        labels = labels or f"{cfg.raw_schema}.ground_truth"
        if conn.execute("select to_regclass(%s)", (labels,)).fetchone()[0]:
            quality = evaluate(conn, labels=labels, canon_schema=cfg.canon_schema, identity_schema=cfg.identity_schema)
    return PipelineResult(run=result, summary=summary, quality=quality, timings=timings)
