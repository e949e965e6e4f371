"""The KPI panel: what the ops team watches, read from the dbt ops views.

`collect` returns plain data (the `--json` output); `render` draws it for a terminal.
Nothing here shows personal data: only counts, keys of runs, reasons and dates.
"""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import psycopg
from psycopg.rows import dict_row
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from matcher.errors import CandidateContractError

OPS_VIEWS = (
    "ops_identity_gap_summary",
    "ops_kpi_red_backlog",
    "ops_kpi_red_recovery_metrics_daily",
    "ops_matcher_health",
    "ops_driver_unlinked_activity",
)


def _plain(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _rows(conn, query: str, params=()) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [{k: _plain(v) for k, v in row.items()} for row in cur.execute(query, params).fetchall()]


def collect(conn: psycopg.Connection, *, days: int = 7) -> dict:
    missing = [v for v in OPS_VIEWS if conn.execute("select to_regclass(%s)", (f"ops.{v}",)).fetchone()[0] is None]
    if missing:
        raise CandidateContractError(f"ops views missing ({', '.join(missing)}): run `dbt build` (or `matcher pipeline`)")
    gap = _rows(conn, "select * from ops.ops_identity_gap_summary order by lead_source_table = 'all', lead_source_table")
    backlog = _rows(
        conn,
        "select count(*) as size, coalesce(round(avg(age_days), 1), 0) as avg_age_days,"
        " coalesce(max(age_days), 0) as max_age_days,"
        " count(*) filter (where age_days > 30) as older_than_30d from ops.ops_kpi_red_backlog",
    )[0]
    buckets = _rows(
        conn,
        "select reason_bucket, count(*) as leads from ops.ops_kpi_red_backlog group by 1 order by 2 desc, 1",
    )
    daily = _rows(
        conn,
        "select * from (select * from ops.ops_kpi_red_recovery_metrics_daily order by metric_date desc limit %s) d"
        " order by metric_date",
        (days,),
    )
    health = _rows(conn, "select * from ops.ops_matcher_health")
    unlinked = _rows(conn, "select * from ops.ops_driver_unlinked_activity")
    return {
        "gap": gap,
        "backlog": backlog | {"by_reason": buckets},
        "today": daily[-1] if daily else None,
        "daily": daily,
        "health": health[0] if health else None,
        "drivers_with_activity_without_identity": unlinked[0] if unlinked else None,
    }


BADGE = {"OK": "bold white on green", "STALE": "bold white on dark_orange", "NEVER": "bold white on red",
         "ACTIVE": "bold white on green", "NO_SIGNAL": "bold white on dark_orange", "NOT_CONFIGURED": "bold white on red"}


def render(data: dict) -> Group:
    parts = []
    total = next((g for g in data["gap"] if g["lead_source_table"] == "all"), None)
    headline = Text()
    if total:
        headline.append("Leads without identity (gap): ", style="bold")
        headline.append(f"{total['pct_unresolved']:.2f}%", style="bold red" if total["pct_unresolved"] > 10 else "bold green")
        headline.append(f"  ({total['unresolved']:,} of {total['leads']:,} leads)")
    headline.append("\nRed KPI backlog (no identity nor claims): ", style="bold")
    headline.append(f"{data['backlog']['size']:,}", style="bold red" if data["backlog"]["size"] else "bold green")
    headline.append(f" leads, avg age {data['backlog']['avg_age_days']} d, oldest {data['backlog']['max_age_days']} d")
    parts.append(headline)

    gap = Table(title="Gap by source", expand=False)
    for col in ("source", "leads", "resolved", "no_identity", "no_origin", "inconsistent_origin", "% unresolved"):
        gap.add_column(col, justify="left" if col == "source" else "right")
    for g in data["gap"]:
        gap.add_row(g["lead_source_table"], f"{g['leads']:,}", f"{g['resolved']:,}", f"{g['no_identity']:,}",
                    f"{g['no_origin']:,}", f"{g['inconsistent_origin']:,}", f"{g['pct_unresolved']:.2f}")
    parts.append(gap)

    today = data["today"]
    if today:
        flow = Table(title=f"Today ({today['metric_date']})", show_header=True)
        for col in ("backlog start", "in", "matched out", "claimed out", "net change", "backlog end", "top fail reason"):
            flow.add_column(col, justify="right")
        net = today["net_change"]
        flow.add_row(f"{today['backlog_start']:,}", f"{today['new_backlog_in']:,}", f"{today['matched_out']:,}",
                     f"{today['claimed_out']:,}", Text(f"{net:+,}", style="green" if net <= 0 else "red"),
                     f"{today['backlog_end']:,}", str(today["top_fail_reason"] or "-"))
        parts.append(flow)
    if data["backlog"]["by_reason"]:
        reasons = Table(title="Backlog by reason")
        reasons.add_column("reason_bucket")
        reasons.add_column("leads", justify="right")
        for b in data["backlog"]["by_reason"][:8]:
            reasons.add_row(b["reason_bucket"], f"{b['leads']:,}")
        parts.append(reasons)

    h = data["health"] or {}
    health = Text()
    health.append("Matcher freshness ", style="bold")
    health.append(f" {h.get('freshness_status', 'NEVER')} ", style=BADGE.get(h.get("freshness_status"), ""))
    health.append(f"  last success {h.get('last_success_at') or 'never'}")
    health.append("\nRecovery ", style="bold")
    health.append(f" {h.get('recovery_status', 'NOT_CONFIGURED')} ", style=BADGE.get(h.get("recovery_status"), ""))
    health.append(f"  matched in the last 24 h: {h.get('matched_last_24h', 0):,}")
    days = h.get("days_to_clear")
    health.append(f"\nDays to clear the backlog at the current rate: {days if days is not None else 'not draining'}")
    u = data["drivers_with_activity_without_identity"] or {}
    health.append("\nDrivers with activity but no identity: ", style="bold")
    health.append(f"today {u.get('drivers_active_today_unlinked', 0):,}, last 7 days {u.get('drivers_active_7d_unlinked', 0):,}")
    parts.append(health)
    return Group(*[Panel(p, expand=False) if isinstance(p, Text) else p for p in parts])


def diagnostics(conn: psycopg.Connection, cfg) -> dict:
    """What explains the panel: recent runs, fail reasons of the last 24 h, origin health."""
    from psycopg import sql

    from matcher import origins

    canon = sql.Identifier(cfg.canon_schema)
    with conn.cursor(row_factory=dict_row) as cur:
        runs = cur.execute(
            sql.SQL("select run_id, command, status, started_at, extract(epoch from finished_at - started_at)::float"
                    " as seconds, processed, matched, failed, error from {}.match_runs order by run_id desc limit 10"
                    ).format(canon)).fetchall()
        reasons = cur.execute(
            sql.SQL("select fail_reason, count(*) as n from {}.match_attempts where outcome = 'failed'"
                    " and attempted_at > now() - interval '24 hours' group by 1 order by 2 desc").format(canon)).fetchall()
        missing = cur.execute(
            sql.SQL("select count(*) as links, count(distinct l.person_key) as persons from {c}.identity_links l"
                    " where not exists (select 1 from {c}.identity_origin o where o.person_key = l.person_key)"
                    ).format(c=canon)).fetchone()
    return {
        "recent_runs": runs,
        "fail_reasons_24h": {r["fail_reason"]: r["n"] for r in reasons},
        "links_without_origin": missing["links"],
        "persons_without_origin": missing["persons"],
        "inconsistent_origins": len(origins.inconsistent(conn, cfg)),
    }
