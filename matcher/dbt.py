"""Running dbt against the same database the matcher uses.

dbt runs as a subprocess (`python -m dbt.cli.main`) of the same interpreter: isolated from
the matcher's logging and globals, and given explicit PG* variables from `Database.dbt_env`.
Unless the user names a profiles folder (`--profiles-dir` or DBT_PROFILES_DIR), the project's
`profiles.example.yml` is copied to `.matcher/profiles.yml` and used: it reads only env_var().
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from matcher.db import Database, state_dir
from matcher.errors import DbtFailed

log = logging.getLogger(__name__)


def profiles_dir(project: Path) -> Path:
    explicit = os.environ.get("DBT_PROFILES_DIR")
    if explicit:
        return Path(explicit)
    target = state_dir(project)
    example = project / "profiles.example.yml"
    profile = target / "profiles.yml"
    if not profile.exists() or profile.read_bytes() != example.read_bytes():
        shutil.copyfile(example, profile)
    return target


def dbt_env(db: Database, project: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The matcher's database is authoritative (it was itself read from the dbt profile when the
    # user named one), so dbt always gets it as explicit PG* variables.
    env.update(db.dbt_env())
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.update(extra or {})
    return env


def invoke(
    db: Database,
    project: Path,
    args: list[str],
    *,
    target_path: Path | None = None,
    quiet: bool = False,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `dbt <args>` in the project; raise DbtFailed with dbt's error lines on failure."""
    state = state_dir(project)
    target_path = target_path or Path(os.environ.get("MATCHER_DBT_TARGET_PATH", state / "target"))
    cmd = [
        sys.executable, "-c", "from dbt.cli.main import cli; cli()", *args,
        "--project-dir", str(project),
        "--profiles-dir", str(profiles_dir(project)),
        "--target-path", str(target_path),
        "--log-path", str(target_path / "logs"),
    ]
    log.info("dbt %s", " ".join(args))
    proc = subprocess.run(
        cmd, cwd=project, env=dbt_env(db, project, extra_env), text=True,
        stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None,
    )
    if proc.returncode != 0 and args[:1] in (["build"], ["run"]) and deadlocked(target_path):
        # dbt replaces a view by renaming the old one aside and dropping it with its dependents
        # (`drop ... cascade`); two threads doing that for views with a dependent in common (the
        # canon staging views all feed the gap analysis) can deadlock, and Postgres cancels one.
        # Nothing half-done stays behind: the victim's view is simply not replaced yet. `dbt
        # retry` runs the failed and skipped models again, with the same arguments.
        log.warning("dbt %s: two of its threads deadlocked replacing views; running the failed models again",
                    args[0])
        retry = [*cmd[: cmd.index("-c") + 2], "retry", *(["--quiet"] if "--quiet" in args else []),
                 *cmd[cmd.index("--project-dir"):]]
        proc = subprocess.run(
            retry, cwd=project, env=dbt_env(db, project, extra_env), text=True,
            stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None,
        )
    if proc.returncode != 0 and args[:1] in (["build"], ["run"]) and "--select" not in args and "-s" not in args:
        _restore_ops_views(cmd, project, db)
    if proc.returncode != 0:
        detail = ""
        if quiet and proc.stdout:
            errors = [ln for ln in proc.stdout.splitlines() if "ERROR" in ln or "FAIL" in ln or "Error" in ln]
            detail = "; ".join(ln.strip() for ln in errors[-5:])
        hint = _upgrade_hint(target_path)
        raise DbtFailed(f"dbt {args[0]} failed (exit {proc.returncode}){': ' + detail if detail else ''}{hint}")
    return proc


def deadlocked(target_path: Path) -> bool:
    """Whether the last dbt invocation in `target_path` lost a model to a deadlock."""
    try:
        results = json.loads((target_path / "run_results.json").read_text())["results"]
    except (OSError, ValueError, KeyError):
        return False
    return any(r.get("status") == "error" and "deadlock detected" in (r.get("message") or "") for r in results)


def _upgrade_hint(target_path: Path) -> str:
    """What to do when an incremental model refused new columns (on_schema_change: fail), the
    case of an upgrade to a version whose identity models gained columns, or when the blocking
    keys are now made differently from the kept ones (macros/incremental_state.sql)."""
    try:
        results = json.loads((target_path / "run_results.json").read_text())["results"]
    except (OSError, ValueError, KeyError):
        return ""
    refused = sorted(r["unique_id"].rsplit(".", 1)[-1] for r in results
                     if "out of sync" in (r.get("message") or ""))
    # a definition check's own words (macros/incremental_state.sql check_definition), without dbt's frame
    for line in (line for r in results for line in (r.get("message") or "").splitlines()):
        if "are defined differently from when the kept ones were built" in line:
            return "; " + line.strip()
    if not refused:
        return ""
    return (f"; the columns of {', '.join(refused)} changed with this version: rebuild the identity models"
            " once with `matcher dbt run --full-refresh` (the matcher's own tables are kept; docs/runbook.md)")


def _restore_ops_views(cmd: list[str], project: Path, db: Database) -> None:
    """After a build that stopped half-way, put the ops views back over the last good tables.

    dbt-postgres replaces a view or table by dropping the old one with CASCADE, so a build that
    stops after rebuilding upstream relations (e.g. a failing source test) takes the ops views
    with it, and the KPI panel would go dark exactly when the data has a problem.
    """
    base = cmd[: cmd.index("-c") + 2]
    options = cmd[cmd.index("--project-dir"): cmd.index("--target-path")]
    # its own target folder, so the failed build's run_results.json stays for whoever reads it
    target = Path(cmd[cmd.index("--target-path") + 1]) / "restore-ops"
    restore = [*base, "run", "--quiet", "--select", "path:models/marts/ops", *options,
               "--target-path", str(target), "--log-path", str(target / "logs")]
    result = subprocess.run(restore, cwd=project, env=dbt_env(db, project), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode == 0:
        log.warning("dbt stopped half-way; the ops views were restored over the last good tables")
    else:
        log.warning("dbt stopped half-way and the ops views could not be restored")
