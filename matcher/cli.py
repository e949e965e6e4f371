"""The `matcher` command line: a thin layer over the library modules.

Every expected failure prints one line (`error: ...`) on stderr and exits with the code of its
kind (see matcher.errors / docs/architecture.md).
"""
from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click
import psycopg
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from matcher import config as config_mod
from matcher import db as db_mod
from matcher import dbt as dbt_mod
from matcher import backlog, demo, runner
from matcher.errors import DatabaseUnavailable, DbtFailed, MatcherError

console = Console()
err_console = Console(stderr=True)


class Context:
    def __init__(self, project: Path, config_path: str | None):
        self.project = project
        self.config_path = config_path
        self._config = None
        self._db = None

    @property
    def config(self) -> config_mod.Config:
        if self._config is None:
            self._config = config_mod.load(self.config_path, self.project)
        return self._config

    @property
    def db(self) -> db_mod.Database:
        if self._db is None:
            self._db = db_mod.resolve(self.project)
        return self._db


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MatcherError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except psycopg.OperationalError as exc:
            # only SQLSTATE class 08 (or no SQLSTATE: the client could not connect) is a lost
            # connection; other operational errors (limits, timeouts, disk full) are reported below
            if exc.sqlstate is None or exc.sqlstate.startswith("08"):
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                err_console.print(f"[bold red]error:[/] database connection failed: {first}", highlight=False)
                sys.exit(DatabaseUnavailable.exit_code)
            logging.getLogger("matcher").debug("database error", exc_info=True)
            err_console.print(
                f"[bold red]error:[/] database error {type(exc).__name__} (SQLSTATE {exc.sqlstate}); "
                "rerun with -vv for details", highlight=False)
            sys.exit(1)
        except psycopg.Error as exc:
            # Postgres messages can quote row values: show the error class, never the text.
            logging.getLogger("matcher").debug("database error", exc_info=True)
            err_console.print(
                f"[bold red]error:[/] unexpected database error {type(exc).__name__} "
                f"(SQLSTATE {exc.sqlstate}); rerun with -vv for details", highlight=False)
            sys.exit(1)

    return wrapper


pass_ctx = click.make_pass_decorator(Context)


@click.group()
@click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The dbt project folder (default: nearest folder with dbt_project.yml).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Matcher configuration file (default: matcher.toml in the project, if any).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="fleet-identity-matcher")
@click.pass_context
def cli(ctx, project_dir, config_path, verbose):
    """Identity resolution for fleet partners: dbt builds candidates, the matcher links them."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)])
    ctx.obj = Context(db_mod.project_dir(project_dir), config_path)


@cli.command()
@pass_ctx
@handle_errors
def migrate(ctx: Context):
    """Create or upgrade the matcher-owned tables (idempotent)."""
    from matcher.migrate import migrate as do_migrate

    with ctx.db.connect(autocommit=True) as conn:
        applied = do_migrate(conn, ctx.config.canon_schema)
    console.print(f"schema {ctx.config.canon_schema}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))


@cli.command("db")
@pass_ctx
@handle_errors
def db_info(ctx: Context):
    """Start the embedded database if needed and show where it is (no password shown)."""
    db = ctx.db.resolved()
    p = db.params
    console.print(f"{'embedded' if ctx.db.embedded else 'server'}: host={p['host']} port={p['port']} "
                  f"user={p['user']} dbname={p['dbname']}")
    console.print(f"psql: PGHOST={p['host']} PGPORT={p['port']} PGUSER={p['user']} PGDATABASE={p['dbname']} psql")


@cli.command("demo-data")
@click.option("--leads", default=3000, show_default=True, help="Lead records across the three channels.")
@click.option("--drivers", type=int, default=None, help="Driver records (default leads/2).")
@click.option("--seed", default=42, show_default=True)
@click.option("--mess", type=click.Choice(["clean", "default", "hard"]), default="default", show_default=True)
@pass_ctx
@handle_errors
def demo_data(ctx: Context, leads, drivers, seed, mess):
    """Write deterministic demo raw data (and its ground truth), replacing what is there."""
    with ctx.db.connect(autocommit=True) as conn:
        demo.create_raw_schema(conn, ctx.config.raw_schema)
        counts = demo.generate(conn, demo.DemoSpec(leads=leads, drivers=drivers, seed=seed, mess=mess), ctx.config.raw_schema)
    console.print(", ".join(f"{k}={v}" for k, v in counts.items()))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
@handle_errors
def dbt(ctx: Context, dbt_args):
    """Run dbt against the matcher's database, e.g. `matcher dbt build` or `matcher dbt docs generate`."""
    if not dbt_args:
        raise click.UsageError("name a dbt command, e.g. `matcher dbt build`")
    from matcher.migrate import migrate as do_migrate, pending

    # the ops views read the matcher's tables (dbt sources): bring them up to this version first
    with ctx.db.connect(autocommit=True) as conn:
        if pending(conn, ctx.config.canon_schema):
            try:
                do_migrate(conn, ctx.config.canon_schema)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise DbtFailed(
                    f"the matcher's tables in schema {ctx.config.canon_schema} are older than this version and"
                    " this user may not upgrade them: run `matcher migrate` as the matcher's user first") from exc
    dbt_mod.invoke(ctx.db, ctx.project, list(dbt_args))


@cli.command()
@click.option("--limit", type=int, default=None, help="Attempt at most this many due records.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's counts as JSON.")
@pass_ctx
@handle_errors
def run(ctx: Context, limit, as_json):
    """Score the candidate table, cluster, and upsert persons, links and origins."""
    result = runner.run(ctx.db, ctx.config, limit=limit)
    if as_json:
        click.echo(json.dumps(_run_dict(result), indent=2))
    else:
        _print_run(result)


@cli.command()
@click.option("--demo", "use_demo", is_flag=True, help="Write demo raw data first (when raw tables are empty).")
@click.option("--regenerate", is_flag=True, help="With --demo: replace existing raw data.")
@click.option("--leads", default=3000, show_default=True, help="Demo size (with --demo).")
@click.option("--seed", default=42, show_default=True, help="Demo seed (with --demo).")
@click.option("--mess", type=click.Choice(["clean", "default", "hard"]), default="default", show_default=True)
@click.option("--labels", default=None, help="Labelled table for precision/recall (default raw.ground_truth if present).")
@click.option("--quiet-dbt", is_flag=True, help="Hide dbt's own output.")
@pass_ctx
@handle_errors
def pipeline(ctx: Context, use_demo, regenerate, leads, seed, mess, labels, quiet_dbt):
    """Run everything: database up, tables ready, (demo data), dbt build, matcher run, summary."""
    from matcher.pipeline import run_pipeline

    spec = demo.DemoSpec(leads=leads, seed=seed, mess=mess) if use_demo else None
    console.rule("[bold]fleet identity pipeline")
    console.print(f"database: {ctx.db.describe()}")
    result = run_pipeline(ctx.db, ctx.project, ctx.config, demo_spec=spec, regenerate=regenerate,
                          dbt_quiet=quiet_dbt, labels=labels)
    _print_run(result.run)
    s = result.summary
    table = Table(title="Identity summary", show_header=False)
    for key in ("records", "persons", "links", "origins"):
        table.add_row(key, f"{s[key]:,}")
    for reason, n in s["unresolved_by_reason"].items():
        table.add_row(f"unresolved: {reason}", f"{n:,}")
    console.print(table)
    if result.quality:
        q = result.quality
        line = f"precision {q.precision:.4f}  recall {q.recall:.4f}  F1 {q.f1:.4f}"
        if q.blocking_recall is not None:
            line += (f"  blocking recall {q.blocking_recall:.4f}"
                     f" ({q.blocking_recall_comparable:.4f} of comparable pairs)")
        console.print(f"[bold]quality vs ground truth:[/] {line}  ({q.true_pairs:,} true pairs)")
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    from matcher import status as status_mod

    with ctx.db.connect(autocommit=True) as conn:
        console.rule("[bold]KPI panel")
        console.print(status_mod.render(status_mod.collect(conn)))


@cli.command("evaluate")
@click.option("--labels", default="raw.ground_truth", show_default=True,
              help="Labelled table (source_table, source_pk, true_entity_id).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def evaluate_cmd(ctx: Context, labels, as_json):
    """Pairwise precision, recall, F1 and blocking recall against labelled data."""
    from matcher.evaluate import evaluate

    with ctx.db.connect(autocommit=True) as conn:
        q = evaluate(conn, labels=labels, canon_schema=ctx.config.canon_schema,
                     identity_schema=ctx.config.identity_schema)
    if as_json:
        click.echo(json.dumps(q.as_dict(), indent=2))
        return
    table = Table(title=f"Match quality vs {labels}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("records", "true_pairs", "predicted_pairs", "true_positive_pairs", "blocked_true_pairs",
                "comparable_true_pairs"):
        v = getattr(q, key)
        table.add_row(key, "n/a" if v is None else f"{v:,}")
    for key in ("precision", "recall", "f1", "blocking_recall", "blocking_recall_comparable"):
        v = getattr(q, key)
        table.add_row(key, "n/a" if v is None else f"{v:.4f}")
    console.print(table)
    pairs = Table(title="By pair of sources")
    for col in ("sources", "true pairs", "predicted", "precision", "recall", "blocking recall"):
        pairs.add_column(col, justify="left" if col == "sources" else "right")
    for row in q.by_source_pair:
        br = row.get("blocking_recall")
        pairs.add_row(row["sources"], f"{row['true_pairs']:,}", f"{row['predicted_pairs']:,}",
                      f"{row['precision']:.4f}", f"{row['recall']:.4f}", "n/a" if br is None else f"{br:.4f}")
    console.print(pairs)
    rules = Table(title="By rule (links whose record is in its person's majority true entity)")
    for col in ("rule", "links", "link precision"):
        rules.add_column(col, justify="left" if col == "rule" else "right")
    for row in q.by_rule:
        rules.add_row(row["rule"], f"{row['links']:,}", f"{row['link_precision']:.4f}")
    console.print(rules)


def _run_dict(r: runner.RunResult) -> dict:
    return {
        "run_id": r.run_id, "status": r.status, "processed": r.processed, "matched": r.matched,
        "new_persons": r.new_persons, "origins_written": r.origins_written, "failed": r.failed,
        "failed_by_reason": r.failed_by_reason, "pending": r.pending, "pairs_scored": r.pairs_scored,
        "pairs_accepted": r.pairs_accepted, "rows_written": r.rows_written,
        "score_processes": r.score_processes, "score_children_mb": round(r.score_children_mb, 1),
        "timings": {k: round(v, 3) for k, v in r.timings.items()},
        "detail": {k: round(v, 3) for k, v in r.detail.items()},
    }


def _print_run(r: runner.RunResult) -> None:
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r.failed_by_reason.items())) or "none"
    console.print(
        f"run {r.run_id} [green]{r.status}[/]: processed {r.processed:,}, linked {r.matched:,}, "
        f"new persons {r.new_persons:,}, origins {r.origins_written:,}, failed {r.failed:,} ({reasons}), "
        f"still pending {r.pending:,}; pairs scored {r.pairs_scored:,}, accepted {r.pairs_accepted:,}"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--days", default=7, show_default=True, help="Days of daily flow to include.")
@pass_ctx
@handle_errors
def status(ctx: Context, as_json, days):
    """The KPI panel: gap, red backlog, today's in/out, freshness, recovery, unlinked drivers."""
    from matcher import status as status_mod

    with ctx.db.connect(autocommit=True) as conn:
        data = status_mod.collect(conn, days=days)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        console.print(status_mod.render(data))


@cli.group()
def origins():
    """Origins: backfill missing ones, list and repair inconsistent ones (audited)."""


@origins.command("backfill")
@pass_ctx
@handle_errors
def origins_backfill(ctx: Context):
    """Write the origin of every person that has links but no origin (the ORIGIN_MISSING fix)."""
    from matcher import origins as origins_mod

    with runner.locked_run(ctx.db, ctx.config, "backfill-origins") as handle:
        with ctx.db.connect(autocommit=True) as conn:
            with conn.transaction():
                written = origins_mod.backfill(conn, ctx.config, handle.run_id)
            state_rows = backlog.refresh(conn, ctx.config, handle.run_id)
        handle.counts = {"origins_written": written, "rows_written": written + state_rows}
    console.print(f"run {handle.run_id}: {written:,} origins written")


@origins.command("check")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def origins_check(ctx: Context, as_json):
    """List origins that contradict the rule (not linked, or not the earliest lead)."""
    from matcher import origins as origins_mod

    with ctx.db.connect(autocommit=True) as conn:
        found = origins_mod.inconsistent(conn, ctx.config)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in found], indent=2))
        return
    table = Table(title=f"{len(found):,} inconsistent origins")
    for col in ("person_key", "current", "rule says", "why"):
        table.add_column(col)
    for c in found[:50]:
        table.add_row(c.person_key, f"{c.old_tag} ({c.old_source_table})", f"{c.new_tag} ({c.new_source_table})", c.why)
    console.print(table)


@origins.command("repair")
@click.option("--reason", required=True, help="Why the origins change (kept in the audit history).")
@click.option("--person", "person_key", default=None, help="Repair one person only.")
@pass_ctx
@handle_errors
def origins_repair(ctx: Context, reason, person_key):
    """Change inconsistent origins to what the rule gives; each change is written to the history."""
    from matcher import origins as origins_mod

    with runner.locked_run(ctx.db, ctx.config, "repair-origins", {"reason": reason, "person": person_key}) as handle:
        with ctx.db.connect(autocommit=True) as conn:
            changed = origins_mod.repair(conn, ctx.config, handle.run_id, reason, person_key)
            state_rows = backlog.refresh(conn, ctx.config, handle.run_id)
        handle.counts = {"rows_written": changed * 2 + state_rows}
    console.print(f"run {handle.run_id}: {changed:,} origins changed, {changed:,} history rows written")


@cli.command()
@click.option("--leads", default=10000, show_default=True, help="Lead records to generate.")
@click.option("--drivers", type=int, default=None, help="Driver records (default leads/2).")
@click.option("--incremental", default=1000, show_default=True, help="New leads for the incremental round (0: skip).")
@click.option("--edited", default=0, show_default=True, type=click.IntRange(min=0),
              help="Drivers whose e-mail changes before the incremental round, besides its new leads.")
@click.option("--with-tests", is_flag=True, help="Also time `dbt test` on the full data.")
@click.option("--write/--no-write", default=True, show_default=True, help="Write figures to docs/benchmarks/.")
@pass_ctx
@handle_errors
def bench(ctx: Context, leads, drivers, incremental, edited, with_tests, write):
    """Benchmark the full pipeline, an incremental round and a no-change re-run (DESTROYS the data in the database)."""
    from matcher import bench as bench_mod

    result = bench_mod.run_benchmark(ctx.db, ctx.project, ctx.config, leads=leads, drivers=drivers,
                                     incremental=incremental, with_tests=with_tests, edited=edited)
    for rnd in result["rounds"]:
        table = Table(title=f"{rnd['round']}: {rnd['total_seconds']:.1f} s, matcher peak {rnd['matcher_peak_mb']} MB,"
                            f" rows written {rnd['rows_written']:,}")
        for col in ("phase", "seconds", "count", "per second"):
            table.add_column(col, justify="left" if col == "phase" else "right")
        for ph in rnd["phases"]:
            unit = next((k for k in ph if k not in ("phase", "seconds") and not k.endswith("_per_s")), None)
            count = ph.get(unit) if unit else None
            rate = ph.get(f"{unit}_per_s") if unit else None
            table.add_row(ph["phase"], f"{ph['seconds']:.2f}", f"{count:,} {unit}" if count is not None else "",
                          f"{rate:,}" if rate else "")
        console.print(table)
    if write:
        path = bench_mod.write_figures(result, ctx.project)
        console.print(f"figures written to {path}")


@cli.command()
@click.option("--login-prefix", default=None,
              help="Also create LOGIN users <prefix>_dbt, <prefix>_matcher, <prefix>_ops in the roles (passwords from env).")
@pass_ctx
@handle_errors
def roles(ctx: Context, login_prefix):
    """Create the least-privilege roles (dbt builder, matcher writer, ops reader) and their grants."""
    from matcher import roles as roles_mod

    with ctx.db.connect(autocommit=True) as conn:
        report = roles_mod.apply_roles(conn, ctx.config, login_prefix=login_prefix)
    for line in report:
        click.echo(line)


@cli.command()
@click.argument("source_table", type=click.Choice(list(config_mod.SOURCE_TABLES)))
@click.argument("source_pk")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def explain(ctx: Context, source_table, source_pk, as_json):
    """Why a record is (or is not) linked: masked identifiers, candidates, field scores, rule, person, origin."""
    from matcher import explain as explain_mod

    with ctx.db.connect(autocommit=True) as conn:
        data = explain_mod.explain(conn, ctx.config, source_table, source_pk)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rec = data["record"]
    console.print(f"[bold]{rec['source_table']} {rec['source_pk']}[/] ({rec['record_kind']}, {rec['event_at']})")
    console.print("identifiers (masked): " + ", ".join(f"{k}={v}" for k, v in rec["identifiers"].items() if v))
    if data["link"]:
        ln = data["link"]
        console.print(f"linked to person {ln['person_key']} by [bold]{ln['match_rule']}[/] "
                      f"(score {ln['match_score']:.4f}, {ln['confidence']}) in run {ln['run_id']}")
    else:
        last = data["attempts"][0] if data["attempts"] else None
        console.print("not linked" + (f": {last['fail_reason']} (run {last['run_id']})" if last else ": never attempted"))
    if data["origin"]:
        o = data["origin"]
        console.print(f"person's origin: {o['origin_tag']} {o['origin_source_table']}/{o['origin_source_pk']} ({o['origin_rule']})")
    for c in data["conflicts"]:
        console.print(f"[red]conflict[/] in run {c['run_id']}: {c['conflict_kind']}, persons {', '.join(c['person_keys'])}")
    table = Table(title=f"{len(data['candidates'])} candidates")
    for col in ("record", "blocked by", *FIELDS_SHORT, "score", "rule"):
        table.add_column(col)
    for c in data["candidates"][:20]:
        table.add_row(f"{c['source_table']}/{c['source_pk']}", ",".join(c["blocking_keys"]),
                      *[c["levels"][f] for f in config_mod.FIELDS], f"{c['score']:.1f}", c["rule"] or "-")
    console.print(table)


FIELDS_SHORT = ("phone", "doc", "email", "plate", "claim", "name")


@cli.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=Path("identity_report.html"),
              show_default=True, help="Where to write the HTML report.")
@click.option("--days", default=60, show_default=True, help="Days of backlog trend in the chart.")
@pass_ctx
@handle_errors
def report(ctx: Context, out_path, days):
    """Write a self-contained HTML report: the KPI panel and the backlog trend as a chart."""
    from matcher import report as report_mod
    from matcher import status as status_mod

    with ctx.db.connect(autocommit=True) as conn:
        data = status_mod.collect(conn, days=days)
    out_path.write_text(report_mod.render_html(data, data["daily"]), encoding="utf-8")
    console.print(f"report written to {out_path}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
@handle_errors
def diagnose(ctx: Context, as_json):
    """The KPI panel plus what explains it: recent runs, fail reasons in the last 24 h, links without origins."""
    from matcher import status as status_mod

    with ctx.db.connect(autocommit=True) as conn:
        data = status_mod.collect(conn)
        data["diagnostics"] = status_mod.diagnostics(conn, ctx.config)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    console.print(status_mod.render(data))
    d = data["diagnostics"]
    runs = Table(title="Recent runs")
    for col in ("run", "command", "status", "started", "seconds", "processed", "matched", "failed", "error"):
        runs.add_column(col)
    for r in d["recent_runs"]:
        runs.add_row(str(r["run_id"]), r["command"], r["status"], str(r["started_at"])[:19],
                     f"{r['seconds']:.1f}" if r["seconds"] is not None else "-", f"{r['processed']:,}",
                     f"{r['matched']:,}", f"{r['failed']:,}", (r["error"] or "")[:60])
    console.print(runs)
    console.print("fail reasons, last 24 h: " + (", ".join(f"{k} {v:,}" for k, v in d["fail_reasons_24h"].items()) or "none"))
    console.print(f"links whose person has no origin: {d['links_without_origin']:,} "
                  f"({d['persons_without_origin']:,} persons; `matcher origins backfill` writes them)")
    console.print(f"inconsistent origins: {d['inconsistent_origins']:,} (`matcher origins check`)")
