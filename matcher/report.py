"""A self-contained HTML report for the ops team: the KPI panel and the backlog trend as a chart.

No JavaScript and no external assets (inline SVG), so it can be mailed or served as a file.
Like the panel, it shows counts only, never personal data.
"""
from __future__ import annotations

import html
from datetime import UTC, datetime


def _svg_trend(daily: list[dict], width: int = 880, height: int = 260) -> str:
    """Backlog at end of day as a line, daily inflow and outflow as bars."""
    if not daily:
        return "<p>No daily metrics yet.</p>"
    pad_l, pad_r, pad_t, pad_b = 60, 20, 20, 40
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    top = max(max(d["backlog_end"] for d in daily), max(max(d["new_backlog_in"], d["outflow"]) for d in daily), 1)
    n = len(daily)
    step = w / max(n, 1)

    def y(v: float) -> float:
        return pad_t + h - (v / top) * h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="Red KPI backlog per day">']
    for frac in (0, 0.25, 0.5, 0.75, 1):
        v = top * frac
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{int(v):,}</text>')
    bar = max(step / 3 - 1, 1)
    for i, d in enumerate(daily):
        x = pad_l + i * step
        parts.append(f'<rect x="{x:.1f}" y="{y(d["new_backlog_in"]):.1f}" width="{bar:.1f}" '
                     f'height="{pad_t + h - y(d["new_backlog_in"]):.1f}" fill="#e4572e"><title>{d["metric_date"]}: '
                     f'{d["new_backlog_in"]:,} in</title></rect>')
        parts.append(f'<rect x="{x + bar + 1:.1f}" y="{y(d["outflow"]):.1f}" width="{bar:.1f}" '
                     f'height="{pad_t + h - y(d["outflow"]):.1f}" fill="#29a35a"><title>{d["metric_date"]}: '
                     f'{d["outflow"]:,} out</title></rect>')
    points = " ".join(f"{pad_l + i * step + step / 2:.1f},{y(d['backlog_end']):.1f}" for i, d in enumerate(daily))
    parts.append(f'<polyline points="{points}" fill="none" stroke="#1f4e79" stroke-width="2"/>')
    for i in sorted({0, n // 2, n - 1}):
        anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
        parts.append(f'<text x="{pad_l + i * step + step / 2:.1f}" y="{height - 12}" font-size="11" '
                     f'text-anchor="{anchor}">{html.escape(str(daily[i]["metric_date"]))}</text>')
    parts.append(f'<text x="{pad_l + 4}" y="{pad_t + 12}" font-size="11" fill="#1f4e79">backlog at end of day</text>')
    parts.append(f'<text x="{pad_l + 160}" y="{pad_t + 12}" font-size="11" fill="#e4572e">in</text>')
    parts.append(f'<text x="{pad_l + 180}" y="{pad_t + 12}" font-size="11" fill="#29a35a">out</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render_html(data: dict, daily: list[dict]) -> str:
    health = data.get("health") or {}
    total = next((g for g in data["gap"] if g["lead_source_table"] == "all"), {})
    unlinked = data.get("drivers_with_activity_without_identity") or {}
    tiles = [
        ("Gap (leads without identity)", f"{total.get('pct_unresolved', 0):.2f}%"),
        ("Red KPI backlog", f"{data['backlog']['size']:,}"),
        ("Matcher freshness", health.get("freshness_status", "NEVER")),
        ("Recovery", health.get("recovery_status", "NOT_CONFIGURED")),
        ("Matched last 24 h", f"{health.get('matched_last_24h', 0):,}"),
        ("Days to clear", _fmt(health.get("days_to_clear")) if health.get("days_to_clear") is not None else "not draining"),
        ("Drivers active, no identity (today / 7 d)",
         f"{unlinked.get('drivers_active_today_unlinked', 0):,} / {unlinked.get('drivers_active_7d_unlinked', 0):,}"),
    ]
    tile_html = "".join(f'<div class="tile"><div class="k">{html.escape(k)}</div><div class="v">{html.escape(v)}</div></div>'
                        for k, v in tiles)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Identity recovery report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.tiles {{ display: flex; flex-wrap: wrap; gap: .75rem; margin-bottom: 1.5rem; }}
.tile {{ border: 1px solid #ccc; border-radius: 6px; padding: .6rem .9rem; min-width: 10rem; }}
.k {{ font-size: .8rem; color: #666; }} .v {{ font-size: 1.4rem; font-weight: 600; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
</style></head><body>
<h1>Identity recovery report</h1>
<p>Generated {generated}. Leads without identity nor claims drain as leads are linked to persons
(matched out) or covered by a claim (claimed out).</p>
<div class="tiles">{tile_html}</div>
<h2>Red KPI backlog, day by day</h2>
{_svg_trend(daily)}
<h2>Gap by source</h2>
{_table(data["gap"], ["lead_source_table", "leads", "resolved", "no_identity", "no_origin", "inconsistent_origin", "pct_unresolved"])}
<h2>Backlog by reason</h2>
{_table(data["backlog"]["by_reason"], ["reason_bucket", "leads"])}
<h2>Daily flow (last {len(daily)} days)</h2>
{_table(daily[::-1], ["metric_date", "backlog_start", "new_backlog_in", "matched_out", "claimed_out", "net_change", "backlog_end", "top_fail_reason"])}
</body></html>
"""
