"""The shipped benchmark: full pipeline at N leads, then an incremental round and a no-change re-run.

Phases are timed separately (generate, dbt staging, intermediate + candidates, matcher read /
score / cluster / write, ops views, dbt tests), with rows or pairs per second and the matcher's
peak memory (its own process, measured by the OS, plus the private memory of the processes it
forks to score pairs: a bound above the true peak). Figures go to `docs/benchmarks/*.json` and
a table in `docs/benchmark.md`, with the machine they came from.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from psycopg import sql

from matcher import dbt, demo
from matcher.config import Config
from matcher.db import Database, state_dir
from matcher.migrate import migrate

# Phases that make the benchmark's input (raw rows), not part of the pipeline the targets time
# ("from raw tables to views"): reported, and left out of each round's pipeline seconds.
INPUT_PHASES = ("generate", "append_leads", "edit_drivers")

OPS_VIEWS = ("ops_identity_gap_summary", "ops_kpi_red_backlog", "ops_kpi_red_recovery_metrics_daily",
             "ops_matcher_health", "ops_driver_unlinked_activity")


@dataclass
class Phase:
    name: str
    seconds: float
    rows: int | None = None
    unit: str = "rows"

    def as_dict(self) -> dict:
        rate = round(self.rows / self.seconds) if self.rows is not None and self.seconds > 0 else None
        return {"phase": self.name, "seconds": round(self.seconds, 3), self.unit: self.rows, f"{self.unit}_per_s": rate}


@dataclass
class Round:
    name: str
    phases: list[Phase] = field(default_factory=list)
    matcher_peak_mb: float | None = None
    rows_written: int | None = None
    matcher_detail: dict = field(default_factory=dict)
    dbt_model_seconds: dict = field(default_factory=dict)
    ops_view_seconds: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def pipeline(self) -> float:
        """Seconds from raw tables to views: the total without making the input."""
        return sum(p.seconds for p in self.phases if p.name not in INPUT_PHASES)

    def as_dict(self) -> dict:
        return {"round": self.name, "total_seconds": round(self.total, 3), "matcher_peak_mb": self.matcher_peak_mb,
                "pipeline_seconds": round(self.pipeline, 3),
                "rows_written": self.rows_written, "phases": [p.as_dict() for p in self.phases],
                "matcher_detail_seconds": self.matcher_detail,
                "dbt_model_seconds": self.dbt_model_seconds, "ops_view_seconds": self.ops_view_seconds}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _matcher_run(db: Database, project: Path, env_extra: dict[str, str]) -> tuple[dict, float, float]:
    """`matcher run --json` as a child process: (result, seconds, peak memory in MB). The peak is
    that process's own maximum RSS plus what the processes it forked to score pairs held of their
    own when they ended (`score_children_mb`; their pages shared with it are counted once): they
    run while it holds the run's records, so this bounds the run's peak from above."""
    env = dict(os.environ) | env_extra
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "matcher", "run", "--json"], cwd=project, env=env,
                                stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of that one child: its own peak memory
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {proc.returncode}"
        raise RuntimeError(f"matcher run failed: {last}")
    result = json.loads(stdout)
    return result, seconds, usage.ru_maxrss / 1024 + result.get("score_children_mb", 0.0)


def _count(db: Database, query: str) -> int:
    with db.connect(autocommit=True) as c:
        return c.execute(query).fetchone()[0]


def _layer(unique_id: str) -> str:
    """Bench phase of a dbt model, from its name (stg_ / int_ + identity_ / ops_)."""
    name = unique_id.rsplit(".", 1)[-1]
    if name.startswith("stg_"):
        return "dbt_staging"
    if name.startswith("ops_"):
        return "dbt_ops_views"
    return "dbt_candidates"


def _dbt_round(db: Database, project: Path, cfg: Config) -> tuple[list[Phase], dict[str, float]]:
    """One `dbt run` of the whole project, as the scheduled job runs it; its wall time split into
    the layers' own model times (dbt's run_results.json) and dbt's start-up and parsing."""
    target = Path(os.environ.get("MATCHER_DBT_TARGET_PATH", state_dir(project) / "target"))
    _, wall = _timed(lambda: dbt.invoke(db, project, ["run", "--quiet"], target_path=target, quiet=True))
    results = json.loads((target / "run_results.json").read_text())["results"]
    seconds: dict[str, float] = {}
    # the identity models one by one (dbt's own execution times, threads not rescaled)
    per_model = {res["unique_id"].rsplit(".", 1)[-1]: round(float(res.get("execution_time") or 0.0), 3)
                 for res in results if _layer(res["unique_id"]) == "dbt_candidates"}
    for res in results:
        layer = _layer(res["unique_id"])
        seconds[layer] = seconds.get(layer, 0.0) + float(res.get("execution_time") or 0.0)
    # models run on several threads: scale the layers' model times to the wall time they shared
    busy = sum(seconds.values())
    models_wall = wall - dbt_startup(db, project)
    scale = min(1.0, max(models_wall, 0.0) / busy) if busy else 1.0
    phases = []
    for layer in ("dbt_staging", "dbt_candidates", "dbt_ops_views"):
        layer_s = seconds.get(layer, 0.0) * scale
        rows = None
        if layer == "dbt_staging":
            rows = _count(db, "select (select count(*) from raw.cabinet_leads) + (select count(*) from raw.scout_registrations)"
                              " + (select count(*) from raw.fleet_migrations) + (select count(*) from raw.drivers)")
        elif layer == "dbt_candidates":
            rows = _count(db, sql.SQL("select count(*) from {}.identity_candidates").format(
                sql.Identifier(cfg.identity_schema)).as_string())
        phases.append(Phase(layer, layer_s, rows, "records" if layer == "dbt_staging" else "pairs"))
    phases.append(Phase("dbt_startup", max(wall - sum(p.seconds for p in phases), 0.0), None))
    return phases, per_model


_STARTUP: dict[str, float] = {}


def dbt_startup(db: Database, project: Path) -> float:
    """dbt's fixed cost on this machine: `dbt run` of nothing (start-up, parse, connect), measured once."""
    if "s" not in _STARTUP:
        _, _STARTUP["s"] = _timed(lambda: dbt.invoke(
            db, project, ["run", "--quiet", "--select", "tag:bench-selects-nothing"], quiet=True))
    return _STARTUP["s"]


def _pipeline_round(name: str, db: Database, project: Path, cfg: Config, env_extra: dict[str, str]) -> Round:
    rnd = Round(name)
    dbt_phases, rnd.dbt_model_seconds = _dbt_round(db, project, cfg)
    rnd.phases += dbt_phases
    result, seconds, peak = _matcher_run(db, project, env_extra)
    t = result["timings"]
    pairs = result["pairs_scored"]
    rnd.phases += [
        Phase("matcher_select_due", t.get("select_due", 0.0), result["processed"], "records"),
        Phase("matcher_read", t.get("read", 0.0), pairs, "pairs"),
        Phase("matcher_score", t.get("score", 0.0), pairs, "pairs"),
        Phase("matcher_cluster", t.get("cluster", 0.0), result["pairs_accepted"], "pairs"),
        Phase("matcher_write", t.get("write", 0.0), result["rows_written"], "rows"),
        Phase("matcher_overhead", max(seconds - sum(t.values()), 0.0), None),
    ]
    rnd.matcher_peak_mb = round(peak, 1)
    rnd.rows_written = result["rows_written"]
    rnd.matcher_detail = result.get("detail", {})
    for view in OPS_VIEWS:
        _, s = _timed(lambda: _count(db, f"select count(*) from ops.{view}"))
        rnd.ops_view_seconds[view] = round(s, 3)
    rnd.phases.append(Phase("ops_views_read", sum(rnd.ops_view_seconds.values()), None))
    return rnd


def run_benchmark(db: Database, project: Path, cfg: Config, *, leads: int, drivers: int | None, incremental: int,
                  seed: int = 42, with_tests: bool = False, edited: int = 0) -> dict:
    """`edited`: drivers whose profile changes (demo.edit_drivers) before the incremental round,
    besides its new leads, as an hourly run sees them."""
    env_extra = {"MATCHER_DATABASE_URL": " ".join(f"{k}={v}" for k, v in db.resolved().params.items())}
    rounds: list[Round] = []
    calibration = calibrate(db)
    with db.connect(autocommit=True) as conn:
        for schema in (cfg.canon_schema, cfg.identity_schema, "intermediate", "staging", "ops"):
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
        migrate(conn, cfg.canon_schema)
        demo.create_raw_schema(conn, cfg.raw_schema, drop=True)
        spec = demo.DemoSpec(leads=leads, drivers=drivers, seed=seed)
        counts, s = _timed(lambda: demo.generate(conn, spec, cfg.raw_schema))
    full = Round("full")
    records = sum(counts.get(t, 0) for t in ("cabinet_leads", "scout_registrations", "fleet_migrations", "drivers"))
    full.phases.append(Phase("generate", s, records, "records"))
    rest = _pipeline_round("full", db, project, cfg, env_extra)
    full.phases += rest.phases
    full.matcher_peak_mb, full.rows_written, full.matcher_detail = rest.matcher_peak_mb, rest.rows_written, rest.matcher_detail
    full.dbt_model_seconds, full.ops_view_seconds = rest.dbt_model_seconds, rest.ops_view_seconds
    rounds.append(full)
    if with_tests:
        _, s = _timed(lambda: dbt.invoke(db, project, ["test", "--quiet"], quiet=True))
        full.phases.append(Phase("dbt_tests", s, None))

    if incremental:
        with db.connect(autocommit=True) as conn:
            _, s = _timed(lambda: demo.append_leads(conn, incremental, seed=seed + 1, schema=cfg.raw_schema, spec=spec))
            changed, edit_s = _timed(lambda: demo.edit_drivers(conn, edited, seed=seed + 1, schema=cfg.raw_schema))
        inc = _pipeline_round(f"incremental_{incremental}", db, project, cfg, env_extra)
        inc.phases.insert(0, Phase("append_leads", s, incremental, "records"))
        if edited:
            inc.phases.insert(1, Phase("edit_drivers", edit_s, changed, "records"))
        rounds.append(inc)

    rounds.append(_pipeline_round("no_change", db, project, cfg, env_extra))
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "leads": leads,
        "drivers": drivers if drivers is not None else leads // 2,
        "edited": edited if incremental else 0,
        "machine": machine() | {"calibration_seconds": calibration},
        "rounds": [r.as_dict() for r in rounds],
    }


def calibrate(db: Database) -> dict[str, float]:
    """How fast this machine is right now, by two fixed workloads (best of three): `python`, a
    pure-Python loop, and `postgres`, hashing 2M strings in one query. A shared machine's speed
    drifts from day to day (this one's ran the same benchmark up to 2x slower on another day), so
    figures from different days compare only through these."""
    def python_loop() -> None:
        total = 0
        for i in range(5_000_000):
            total += i ^ (i >> 3)

    def best(fn) -> float:
        return round(min(_timed(fn)[1] for _ in range(3)), 3)

    with db.connect(autocommit=True) as conn:
        query = "select sum(hashtextextended(g::text, 0) & 1) from generate_series(1, 2000000) as g"
        return {"python": best(python_loop), "postgres": best(lambda: conn.execute(query).fetchone())}


def machine() -> dict:
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gb": mem_gb, "python": platform.python_version(),
            "platform": platform.platform(), "huge_pages": huge_pages()}


THP = Path("/sys/kernel/mm/transparent_hugepage")


def huge_pages(thp: Path = THP) -> dict:
    """The kernel's transparent-huge-page policy (`enabled`, `defrag`: the bracketed choice, None
    where the kernel has none) and whether numpy in the matcher's process advises them
    (NUMPY_MADVISE_HUGEPAGE, "0" unless the user set it: matcher/__init__.py). Matcher figures
    move with these (docs/benchmark.md, round 9)."""
    policy = {}
    for name in ("enabled", "defrag"):
        try:
            text = (thp / name).read_text()
        except OSError:
            policy[name] = None
            continue
        chosen = text[text.find("[") + 1:text.find("]")] if "[" in text and "]" in text else text.strip()
        policy[name] = chosen or None
    return policy | {"numpy_advice": os.environ.get("NUMPY_MADVISE_HUGEPAGE")}


START, END = "<!-- figures:start -->", "<!-- figures:end -->"
TARGETS = (
    "Targets (issue 5, 1M leads + 500k drivers, this 2-core machine): full pipeline <= 180 s; matcher >= 500k"
    " pairs/s end to end and >= 150k rows/s written; 10k new leads on top of 1M <= 15 s; no-change re-run writes"
    " 0 rows and takes <= 10% of the full run; matcher peak memory <= 2 GB."
)


def write_figures(result: dict, project: Path) -> Path:
    """Save the run's JSON and regenerate the figures section of docs/benchmark.md from every JSON."""
    out_dir = project / "docs" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench_{result['leads']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    doc = project / "docs" / "benchmark.md"
    if doc.exists() and START in doc.read_text():
        text = doc.read_text()
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1] if END in rest else ""
        doc.write_text(head + START + "\n" + figures_markdown(out_dir) + END + tail)
    return path


def _machine_note(machine: dict) -> str:
    """What a figure depends on beyond the hardware: the calibration and the huge-page policy."""
    cal = machine.get("calibration_seconds")
    note = ""
    if cal:
        note = (f" Calibration at the start (`matcher.bench.calibrate`, lower is faster): Python loop"
                f" {cal['python']:.2f} s, Postgres hashing {cal['postgres']:.2f} s.")
    thp = machine.get("huge_pages")
    if thp:
        advice = {"0": "off", "1": "on"}.get(thp.get("numpy_advice") or "", "numpy's default")
        note += (f" Transparent huge pages: enabled {thp.get('enabled') or 'n/a'}, defrag {thp.get('defrag') or 'n/a'};"
                 f" numpy's advice {advice}.")
    return note


def _pipeline_seconds(rnd: dict) -> float:
    """A round's seconds from raw tables to views (computed for JSONs written before the field)."""
    if "pipeline_seconds" in rnd:
        return rnd["pipeline_seconds"]
    return sum(p["seconds"] for p in rnd["phases"] if p["phase"] not in INPUT_PHASES)


def figures_markdown(out_dir: Path) -> str:
    runs = sorted((json.loads(p.read_text()) for p in out_dir.glob("bench_*.json")), key=lambda r: r["leads"])
    lines = [TARGETS, "", "### Scaling", "",
             "Run times are the pipeline's, from raw tables to views; in brackets, with generating the"
             " raw rows (`generate`, `append_leads`, `edit_drivers`), which the pipeline does not do.", "",
             "| leads | drivers | records | full run (s) | incremental (new leads, s) | no-change re-run (s) |"
             " matcher pairs/s (read+score) | matcher pairs/s (whole run) | rows written/s | matcher peak MB | measured |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rounds = {x["round"]: x for x in r["rounds"]}
        full = rounds["full"]
        phases = {p["phase"]: p for p in full["phases"]}
        inc = next((x for k, x in rounds.items() if k.startswith("incremental")), None)
        read, score = phases.get("matcher_read", {}), phases.get("matcher_score", {})
        pairs = read.get("pairs") or 0
        secs = (read.get("seconds") or 0) + (score.get("seconds") or 0)
        write = phases.get("matcher_write", {})
        matcher_s = sum(p["seconds"] for name, p in phases.items() if name.startswith("matcher_"))
        inc_cell = "-"
        if inc:
            edits = f" + {r['edited']:,} drivers edited" if r.get("edited") else ""
            inc_cell = f"{inc['round'].split('_')[1]}{edits} / {_pipeline_seconds(inc):.1f} ({inc['total_seconds']:.1f})"
        lines.append(
            f"| {r['leads']:,} | {r['drivers']:,} | {phases['generate'].get('records', 0):,} |"
            f" {_pipeline_seconds(full):.1f} ({full['total_seconds']:.1f}) |"
            f" {inc_cell} |"
            f" {rounds['no_change']['total_seconds']:.1f} ({rounds['no_change']['rows_written']} rows) |"
            f" {round(pairs / secs) if secs else 0:,} | {round(pairs / matcher_s) if matcher_s else 0:,} |"
            f" {write.get('rows_per_s') or 0:,} | {full['matcher_peak_mb']} |"
            f" {r['generated_at'][:10]} |"
        )
    for r in runs:
        lines += ["", f"### {r['leads']:,} leads: phases", "",
                  f"Machine: {r['machine']['cpus']} cpus ({r['machine']['cpu']}), {r['machine']['memory_gb']} GB,"
                  f" Python {r['machine']['python']}.{_machine_note(r['machine'])}", ""]
        for rnd in r["rounds"]:
            made = rnd["total_seconds"] - _pipeline_seconds(rnd)
            pipeline = f" ({_pipeline_seconds(rnd):.1f} s from raw tables to views)" if made > 0 else ""
            lines += [f"**{rnd['round']}**: {rnd['total_seconds']:.1f} s{pipeline}, matcher peak {rnd['matcher_peak_mb']} MB,"
                      f" rows written {rnd['rows_written']:,}", "", "| phase | seconds | count | per second |",
                      "|---|---|---|---|"]
            for ph in rnd["phases"]:
                unit = next((k for k in ph if k not in ("phase", "seconds") and not k.endswith("_per_s")), None)
                count = ph.get(unit) if unit else None
                rate = ph.get(f"{unit}_per_s") if unit else None
                lines.append(f"| {ph['phase']} | {ph['seconds']:.2f} | {f'{count:,} {unit}' if count is not None else ''} |"
                             f" {f'{rate:,}' if rate else ''} |")
            lines.append("")
    return "\n".join(lines) + "\n"
