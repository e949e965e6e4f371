"""The retry policy of failed records: not again on unchanged input, again after the interval
up to the attempt cap, and again whenever the record itself changes."""
from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from conftest import ROOT, subprocess_env, throwaway_database

from matcher import demo
from matcher.migrate import migrate

pytestmark = pytest.mark.slow


def matcher(env, *args):
    proc = subprocess.run([sys.executable, "-m", "matcher", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def attempts(db) -> int:
    with db.connect(autocommit=True) as c:
        return c.execute("select count(*) from canon.match_attempts where source_pk = 'LONE'").fetchone()[0]


def test_failed_records_are_retried_by_interval_cap_and_change(server, dbt_target, tmp_path):
    with throwaway_database(server, "matcher_retry") as db:
        with db.connect(autocommit=True) as c:
            migrate(c, "canon")
            demo.create_raw_schema(c, "raw")
            # a lead whose person never became a driver: nothing to match it with
            c.execute("insert into raw.cabinet_leads values ('LONE', %s, 'Rosa', 'Vargas Llosa', '987111222',"
                      " '41112222', null, null)", (datetime(2026, 1, 1, tzinfo=UTC),))
        env = subprocess_env(db, dbt_target)
        matcher(env, "dbt", "build", "--quiet")
        matcher(env, "run")
        assert attempts(db) == 1
        matcher(env, "run")                       # unchanged, inside the retry interval: not again
        assert attempts(db) == 1

        cfg = tmp_path / "retry.toml"
        cfg.write_text("[run]\nretry_after_hours = 0\nmax_attempts = 3\n")
        retry_env = {**env, "MATCHER_CONFIG": str(cfg)}
        matcher(retry_env, "run")                 # interval passed: again
        matcher(retry_env, "run")
        assert attempts(db) == 3
        matcher(retry_env, "run")                 # the cap holds
        assert attempts(db) == 3

        with db.connect(autocommit=True) as c:    # the record changes: tried again, cap or not
            c.execute("update raw.cabinet_leads set phone = '987111333' where lead_id = 'LONE'")
        matcher(retry_env, "dbt", "build", "--quiet")
        matcher(retry_env, "run")
        assert attempts(db) == 4
        with db.connect(autocommit=True) as c:
            status, n, reason = c.execute("select status, attempts, fail_reason from canon.recovery_queue"
                                          " where source_pk = 'LONE'").fetchone()
        assert status == "failed" and n == 4 and reason in ("no_candidates", "below_threshold")
