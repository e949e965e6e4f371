"""The retry policy of failed records: not again on unchanged input, again after the interval
up to the attempt cap, and again whenever the record itself changes."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from conftest import ROOT, subprocess_env, throwaway_database

from matcher import config, demo, runner
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


def chosen_both_ways(db, cfg) -> tuple[set[int], set[int], str]:
    """The due records as a run would choose them now: joining every pending record with its
    attempts, and the way the run takes (from the last complete run's mark, where it can)."""
    run = runner.Run(db, cfg)
    with db.connect(autocommit=True) as c:
        run._select_due(c, runner.RunResult(0, "test"), from_mark=False)
        joined = {u for (u,) in c.execute("select record_uid from due")}
        run._select_due(c, runner.RunResult(0, "test"))
        chosen = {u for (u,) in c.execute("select record_uid from due")}
    return joined, chosen, run.due_path


def test_due_records_looked_up_since_the_last_complete_run_are_those_the_whole_join_finds(
        server, dbt_target, tmp_path, monkeypatch):
    """An hourly run looks its due records up among those rewritten or past their retry interval
    since the last complete run; at every step that is exactly the set the join of every pending
    record with its attempts gives: new and edited records, failed ones whose interval passed
    (and not once at the cap), after a limited run, and it joins instead under another retry
    policy or when too many may be due."""
    cfg_path = tmp_path / "retry.toml"
    cfg_path.write_text("[run]\nretry_after_hours = 0.003\nmax_attempts = 3\n")   # 10.8 s
    cfg = config.load(cfg_path)
    with throwaway_database(server, "matcher_due") as db:
        with db.connect(autocommit=True) as c:
            migrate(c, "canon")
            demo.create_raw_schema(c, "raw")
            demo.generate(c, demo.DemoSpec(leads=400, seed=5), "raw")
        env = {**subprocess_env(db, dbt_target), "MATCHER_CONFIG": str(cfg_path)}
        matcher(env, "dbt", "run", "--quiet")
        matcher(env, "run")

        # new leads and edited ones, and the failed records of the first run past their interval
        time.sleep(11)
        with db.connect(autocommit=True) as c:
            demo.append_leads(c, 40, seed=9, schema="raw")
            edited = c.execute("update raw.cabinet_leads set phone = '9' || right(phone, 8)"
                               " where lead_id in (select lead_id from raw.cabinet_leads order by lead_id limit 10)"
                               " and phone is not null").rowcount
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            new = {u for (u,) in c.execute("select p.record_uid from identity.identity_pending_records p"
                                           " where not exists (select 1 from canon.match_attempts a"
                                           " where a.record_uid = p.record_uid)")}
            retried = {u for (u,) in c.execute("select distinct record_uid from canon.match_attempts")}
        joined, chosen, path = chosen_both_ways(db, cfg)
        assert path == "since" and chosen == joined
        assert edited and len(new) >= 30 and new <= chosen and chosen & retried

        matcher(env, "run")
        joined, chosen, path = chosen_both_ways(db, cfg)   # inside the interval: nothing
        assert path == "since" and chosen == joined == set()
        for _ in range(2):                                  # past it, up to the cap
            time.sleep(11)
            joined, chosen, path = chosen_both_ways(db, cfg)
            assert path == "since" and chosen == joined and chosen
            matcher(env, "run")
        time.sleep(11)
        joined, chosen, path = chosen_both_ways(db, cfg)    # the cap holds
        assert path == "since" and chosen == joined == set()

        # a limited run leaves due records behind: the next run still finds them
        with db.connect(autocommit=True) as c:
            demo.append_leads(c, 30, seed=10, schema="raw")
        matcher(env, "dbt", "run", "--quiet")
        matcher(env, "run", "--limit", "5")
        joined, chosen, path = chosen_both_ways(db, cfg)
        assert path == "since" and chosen == joined and len(chosen) >= 20

        # another retry policy, or too many to look up one by one: the join
        other = tmp_path / "other.toml"
        other.write_text("[run]\nretry_after_hours = 0.003\nmax_attempts = 4\n")
        joined, chosen, path = chosen_both_ways(db, config.load(other))
        assert path == "join" and chosen == joined and len(chosen) > 20
        monkeypatch.setattr(runner, "DUE_LOOKUPS_MAX", 5)
        joined, chosen, path = chosen_both_ways(db, cfg)
        assert path == "join" and chosen == joined
