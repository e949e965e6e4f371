"""How the matcher runs dbt: a deadlock between dbt's own threads is retried once, other
failures are not (dbt itself is replaced by a stand-in that writes run_results.json)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from matcher import dbt
from matcher.errors import DbtFailed


class _Db:
    def dbt_env(self) -> dict[str, str]:
        return {}


def _results(target: Path, status: str, message: str | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    (target / "run_results.json").write_text(json.dumps({"results": [
        {"unique_id": "model.fleet_identity.stg_canon__identity_links", "status": status, "message": message}]}))


@pytest.fixture
def fake_dbt(monkeypatch, tmp_path):
    """Stand-in for the dbt subprocess: each call pops its (exit code, status, message) outcome."""
    calls: list[list[str]] = []
    outcomes: list[tuple[int, str, str | None]] = []
    target = tmp_path / "target"

    def run(cmd, **kwargs):
        calls.append(cmd)
        code, status, message = outcomes.pop(0)
        _results(target, status, message)
        return subprocess.CompletedProcess(cmd, code, stdout="", stderr=None)

    monkeypatch.setattr(dbt.subprocess, "run", run)
    monkeypatch.setattr(dbt, "profiles_dir", lambda project: tmp_path)
    monkeypatch.setattr(dbt, "state_dir", lambda project: tmp_path)
    return calls, outcomes, target


def test_a_deadlock_between_dbt_threads_is_retried_once(fake_dbt, tmp_path):
    calls, outcomes, target = fake_dbt
    outcomes += [(1, "error", "Database Error in model stg_canon__identity_links\n  deadlock detected\n"),
                 (0, "success", None)]
    proc = dbt.invoke(_Db(), tmp_path, ["run", "--quiet"], target_path=target, quiet=True)
    assert proc.returncode == 0
    assert len(calls) == 2
    first, retry = calls
    assert "run" in first and "retry" in retry and "--quiet" in retry
    # the retry reads the same project, profiles and run_results (target path)
    assert retry[retry.index("--project-dir"):] == first[first.index("--project-dir"):]


def test_a_second_deadlock_or_another_error_is_reported_not_retried(fake_dbt, tmp_path):
    calls, outcomes, target = fake_dbt
    # another error: no retry (then the ops views are restored, a third stand-in call)
    outcomes += [(1, "error", "Database Error: relation \"canon.x\" does not exist"), (0, "success", None)]
    with pytest.raises(DbtFailed):
        dbt.invoke(_Db(), tmp_path, ["run", "--quiet"], target_path=target, quiet=True)
    assert not any("retry" in c for c in calls)
    calls.clear()
    # a deadlock again on the retry: one retry only, then the failure is reported
    outcomes += [(1, "error", "deadlock detected"), (1, "error", "deadlock detected"), (0, "success", None)]
    with pytest.raises(DbtFailed):
        dbt.invoke(_Db(), tmp_path, ["run", "--quiet"], target_path=target, quiet=True)
    assert sum("retry" in c for c in calls) == 1


def test_deadlocked_reads_only_failed_models(tmp_path):
    assert not dbt.deadlocked(tmp_path / "none")          # no run_results.json
    _results(tmp_path, "success", "deadlock detected earlier, retried by Postgres")
    assert not dbt.deadlocked(tmp_path)
    _results(tmp_path, "error", "Database Error\n  deadlock detected\n")
    assert dbt.deadlocked(tmp_path)
