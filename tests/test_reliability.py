"""Faults: one run at a time, SIGKILL in the middle of a run, idempotent re-runs."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from conftest import ROOT, call_without_waiting, subprocess_env, throwaway_database

from matcher import demo, runner
from matcher.migrate import migrate

pytestmark = pytest.mark.slow

LEADS = 1500
# one reference time for every database of this module, so their demo data are identical
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def matcher(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "matcher", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@contextmanager
def prepared(server, dbt_target, tmp_path, name):
    """A database with demo data, migrated tables and a dbt build, but no matcher run yet."""
    with throwaway_database(server, name) as db:
        yield db, _prepare(db, dbt_target, tmp_path, name)


def _prepare(db, dbt_target, tmp_path, name):
    with db.connect(autocommit=True) as c:
        migrate(c, "canon")
        demo.create_raw_schema(c, "raw")
        demo.generate(c, demo.DemoSpec(leads=LEADS, seed=7, now=NOW), "raw")
    env = subprocess_env(db, dbt_target)
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text("[run]\nbatch_size = 150\n")
    env["MATCHER_CONFIG"] = str(cfg)
    proc = matcher(env, "dbt", "build", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return env


def snapshot(db):
    with db.connect(autocommit=True) as c:
        return {
            "links": c.execute("select source_table, source_pk, person_key, match_rule, confidence, evidence"
                               " from canon.identity_links order by 1, 2").fetchall(),
            "registry": c.execute("select person_key from canon.identity_registry order by 1").fetchall(),
            "origin": c.execute("select person_key, origin_tag, origin_source_table, origin_source_pk"
                                " from canon.identity_origin order by 1").fetchall(),
            "failed": c.execute("select source_table, source_pk, fail_reason from ("
                                " select distinct on (source_table, source_pk) * from canon.match_attempts"
                                " order by source_table, source_pk, attempted_at desc) a"
                                " where outcome = 'failed' order by 1, 2").fetchall(),
        }


def canon_definitions(db):
    """Every index and constraint of the canon tables, as Postgres prints them."""
    with db.connect(autocommit=True) as c:
        return c.execute(
            "select t.relname, pg_get_indexdef(i.indexrelid) from pg_index i join pg_class t on t.oid = i.indrelid"
            " where t.relnamespace = 'canon'::regnamespace"
            " union all select t.relname, con.conname || ' ' || pg_get_constraintdef(con.oid) from pg_constraint con"
            " join pg_class t on t.oid = con.conrelid where con.connamespace = 'canon'::regnamespace"
            " order by 1, 2").fetchall()


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(server, dbt_target, tmp_path):
    """A first run writes all its batches in one transaction (its tables are loaded before they
    are indexed): killed half-way it leaves nothing, indexes and constraints in place. A later
    run commits batch by batch: killed half-way it keeps the batches it committed. Either way
    the runs after it end where uninterrupted runs on identical data end."""
    with prepared(server, dbt_target, tmp_path, "matcher_kill") as (killed_db, env_a), \
            prepared(server, dbt_target, tmp_path, "matcher_clean") as (clean_db, env_b):
        definitions = canon_definitions(killed_db)
        proc = matcher({**env_a, "MATCHER_TEST_KILL_AFTER_BATCH": "2"}, "run")
        assert proc.returncode == -9, proc.stderr  # SIGKILL
        with killed_db.connect(autocommit=True) as c:
            status, = c.execute("select status from canon.match_runs order by run_id desc limit 1").fetchone()
            written = c.execute("select (select count(*) from canon.identity_links)"
                                " + (select count(*) from canon.match_attempts)").fetchone()[0]
        assert status == "running"  # nobody could mark it: the process was killed
        assert written == 0         # its batches were one transaction
        assert canon_definitions(killed_db) == definitions

        # a first run of the oldest records, then a later run killed after two of its batches
        assert matcher(env_a, "run", "--limit", "300").returncode == 0
        proc = matcher({**env_a, "MATCHER_TEST_KILL_AFTER_BATCH": "2"}, "run")
        assert proc.returncode == -9, proc.stderr
        with killed_db.connect(autocommit=True) as c:
            partial = c.execute("select count(*) from canon.identity_links where run_id ="
                                " (select max(run_id) from canon.match_runs)").fetchone()[0]
        assert partial > 0          # some batches had committed

        resumed = matcher(env_a, "run", "--json")
        assert resumed.returncode == 0, resumed.stderr
        with killed_db.connect(autocommit=True) as c:
            runs = c.execute("select status, error from canon.match_runs order by run_id").fetchall()
        assert [s for s, _ in runs] == ["failed", "succeeded", "failed", "succeeded"]
        assert all("interrupted" in e for s, e in runs if s == "failed")
        assert canon_definitions(killed_db) == definitions

        assert matcher(env_b, "run", "--limit", "300").returncode == 0
        clean = matcher(env_b, "run")
        assert clean.returncode == 0, clean.stderr
        a, b = snapshot(killed_db), snapshot(clean_db)
        assert len(a["links"]) > LEADS
        for key in ("links", "registry", "origin", "failed"):
            assert a[key] == b[key], key


# how a first run loads the empty tables it fills: what it says
FIRST_RUN_CASES = {
    "alone": "first run: identity_links, match_attempts, identity_origin empty: loaded first",
    "read-meanwhile": "first run: identity_links, match_attempts, identity_origin in use by another session",
}


def test_first_run_loads_its_tables_then_indexes_them(server, dbt_target, tmp_path, cfg, caplog):
    """A first run loads the empty links, attempts and origins, then builds their indexes and
    foreign keys in the same transaction: the same definitions as before, and the same rows as
    a run that writes them through their indexes, which it does when another session is reading
    one of those tables (it takes no lock it would wait for)."""
    with prepared(server, dbt_target, tmp_path, "matcher_first") as (db, env):
        definitions = canon_definitions(db)
        config = replace(cfg, batch_size=150)
        snapshots = {}
        for case, said in FIRST_RUN_CASES.items():
            with db.connect(autocommit=True) as c:
                c.execute("truncate canon.identity_links, canon.identity_origin, canon.identity_registry,"
                          " canon.match_attempts, canon.match_conflicts")
            with db.connect() as reader:
                if case == "read-meanwhile":
                    # its transaction holds an access share lock on the links until it ends
                    reader.execute("select count(*) from canon.identity_links")
                caplog.clear()
                with caplog.at_level(logging.INFO, logger="matcher.runner"):
                    done, waited = call_without_waiting(lambda: runner.run(db, config), reader.rollback)
                reader.rollback()
            assert not waited, "the first run waited for another session's lock"
            assert done and done[0].matched > 0
            assert [k for k, s in FIRST_RUN_CASES.items() if s in caplog.text] == [case], caplog.text
            assert canon_definitions(db) == definitions
            snapshots[case] = snapshot(db)
        assert snapshots["alone"] == snapshots["read-meanwhile"]


def test_second_run_while_one_holds_the_lock_is_skipped(server, dbt_target, tmp_path):
    with prepared(server, dbt_target, tmp_path, "matcher_lock") as (db, env):
        with db.connect(autocommit=True) as holder:
            holder.execute("select pg_advisory_lock(%s)", (runner._lock_key("canon"),))
            proc = matcher(env, "run")
            assert proc.returncode == 7
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
            assert len(errors) == 1 and "another matcher run is in progress" in errors[0]
            status, = holder.execute("select status from canon.match_runs order by run_id desc limit 1").fetchone()
            assert status == "skipped"
            assert holder.execute("select count(*) from canon.identity_links").fetchone()[0] == 0
        # the lock holder went away (as a crashed run's connection would): the next run proceeds
        proc = matcher(env, "run", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["matched"] > 0


def test_two_runs_raced_exactly_one_does_the_work(server, dbt_target, tmp_path):
    with prepared(server, dbt_target, tmp_path, "matcher_race") as (db, env):
        procs = [subprocess.Popen([sys.executable, "-m", "matcher", "run", "--json"], env=env, cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert set(codes) <= {0, 7} and codes.count(0) >= 1
        matched = sum(json.loads(out)["matched"] for code, out in results if code == 0)
        with db.connect(autocommit=True) as c:
            links = c.execute("select count(*) from canon.identity_links").fetchone()[0]
            statuses = [r[0] for r in c.execute("select status from canon.match_runs order by run_id")]
        assert matched == links  # no link written twice, none lost
        assert statuses.count("skipped") == codes.count(7)
        assert "running" not in statuses
