"""Conflicts, human overrides and origin repair, on small hand-written raw data."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ROOT, subprocess_env, throwaway_database

from matcher import demo
from matcher.migrate import migrate

pytestmark = pytest.mark.slow
T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)


def matcher(env, *args):
    proc = subprocess.run([sys.executable, "-m", "matcher", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return proc


def build_and_run(env):
    built = matcher(env, "dbt", "build", "--quiet")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    ran = matcher(env, "run", "--json")
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def lead(c, key, days, first, last, phone=None, doc=None, email=None):
    c.execute("insert into raw.cabinet_leads values (%s, %s, %s, %s, %s, %s, %s, null)",
              (key, T0 + timedelta(days=days), first, last, phone, doc, email))


def driver(c, key, days, name, phone=None, doc=None, email=None):
    c.execute("insert into raw.drivers values (%s, %s, %s, %s, %s, %s, null, %s)",
              (key, T0 + timedelta(days=days), name, phone, doc, email, T0 + timedelta(days=days)))


@pytest.fixture
def world(server, dbt_target, tmp_path):
    with throwaway_database(server, "matcher_rules") as db:
        with db.connect(autocommit=True) as c:
            migrate(c, "canon")
            demo.create_raw_schema(c, "raw")
            # person 1: lead then driver, same phone and document, name order swapped
            lead(c, "L1", 0, "Ana María", "Quispe Rojas", "+51 987 000 001", "40000001", "Ana.QR@Mail.com")
            driver(c, "D1", 3, "QUISPE ROJAS ANA MARIA", "987000001", "40000001")
            # person 2: a namesake of person 1, with her own phone and document
            lead(c, "L2", 1, "Ana Maria", "Quispe Rojas", "955-123-456", "71234567")
            driver(c, "D2", 4, "Ana Maria Quispe Rojas", "955123456", "Q71234567")
            # a pair a human says is different people although the data agree
            lead(c, "L3", 2, "Rosa", "Flores", "987000003", "40000003")
            driver(c, "D3", 5, "Rosa Flores", "987000003", "40000003")
            # a pair a human says is the same person although nothing agrees
            lead(c, "L4", 2, "Carmen", "Vega", "987000004", None)
            driver(c, "D4", 6, "Karmen Torres", "987111999", "40000444")
            # one person registered five times by a scout: a component above max_component_size (4)
            for i in range(5):
                c.execute("insert into raw.scout_registrations values (%s, %s, 'S1', 'Pedro Huaman Soto', "
                          "'944555666', '45556667', null)", (f"S{i}", T0 + timedelta(days=i)))
        cfg = tmp_path / "m.toml"
        cfg.write_text("[run]\nmax_component_size = 4\n")
        env = subprocess_env(db, dbt_target) | {"MATCHER_CONFIG": str(cfg)}
        yield db, env


def person_of(c, table, pk):
    row = c.execute("select person_key from canon.identity_links where source_table = %s and source_pk = %s",
                    (table, pk)).fetchone()
    return row[0] if row else None


def last_attempt(c, table, pk):
    return c.execute("select outcome, fail_reason from canon.match_attempts where source_table = %s and source_pk = %s"
                     " order by attempted_at desc limit 1", (table, pk)).fetchone()


def test_overrides_conflicts_and_origin_repair(world):
    db, env = world
    with db.connect(autocommit=True) as c:
        c.execute("insert into canon.match_overrides (decision, left_source_table, left_source_pk, right_source_table,"
                  " right_source_pk, reason) values ('do_not_link', 'cabinet_leads', 'L3', 'drivers', 'D3', 'twins'),"
                  " ('force_link', 'cabinet_leads', 'L4', 'drivers', 'D4', 'verified by phone call')")
    build_and_run(env)
    with db.connect(autocommit=True) as c:
        p1, p2 = person_of(c, "cabinet_leads", "L1"), person_of(c, "cabinet_leads", "L2")
        assert p1 and p1 == person_of(c, "drivers", "D1")
        assert p2 and p2 == person_of(c, "drivers", "D2") and p2 != p1
        # do-not-link honoured: the lead waits, the driver is a person of its own
        assert person_of(c, "cabinet_leads", "L3") is None
        assert last_attempt(c, "cabinet_leads", "L3") == ("failed", "below_threshold")
        assert person_of(c, "drivers", "D3") is not None
        # force-link honoured
        p4 = person_of(c, "cabinet_leads", "L4")
        assert p4 and p4 == person_of(c, "drivers", "D4")
        rule, = c.execute("select match_rule from canon.identity_links where source_pk = 'L4'").fetchone()
        assert rule == "force_link"
        # an oversized component is refused whole, and recorded
        for i in range(5):
            assert person_of(c, "scout_registrations", f"S{i}") is None
            assert last_attempt(c, "scout_registrations", f"S{i}") == ("failed", "conflict")
        kinds = c.execute("select distinct conflict_kind, component_size from canon.match_conflicts").fetchall()
        assert kinds == [("oversized_component", 5)]
        # origins: earliest lead, driver_direct for the driver alone
        origins = dict(c.execute("select person_key, origin_tag from canon.identity_origin").fetchall())
        assert origins[p1] == "cabinet_lead"
        assert origins[person_of(c, "drivers", "D3")] == "driver_direct"

        # a chain that would join the namesakes: D9 agrees with person 1 (email), L9 with D9 (phone)
        # and with person 2 (document). Refused as a conflict, never merged.
        driver(c, "D9", 8, "Ana Maria Quispe Rojas", "966777888", None, "ana.qr@mail.com")
        lead(c, "L9", 9, "Ana Maria", "Quispe Rojas", "966777888", "71234567")
        # an earlier lead of person 1 arrives: person 1's origin becomes inconsistent
        lead(c, "L0", -30, "Ana Maria", "Quispe Rojas", "987000001", "40000001")
    build_and_run(env)
    with db.connect(autocommit=True) as c:
        for table, pk in (("drivers", "D9"), ("cabinet_leads", "L9")):
            assert person_of(c, table, pk) is None
            assert last_attempt(c, table, pk) == ("failed", "conflict")
            kind, persons = c.execute("select conflict_kind, person_keys from canon.match_conflicts"
                                      " where source_pk = %s", (pk,)).fetchone()
            assert kind == "multiple_persons" and sorted(persons) == sorted([p1, p2])
        assert c.execute("select count(distinct person_key) from canon.identity_registry").fetchone()[0] == 4
        # L0 joined person 1, but the origin was NOT changed silently
        assert person_of(c, "cabinet_leads", "L0") == p1, last_attempt(c, "cabinet_leads", "L0")
        origin_pk, = c.execute("select origin_source_pk from canon.identity_origin where person_key = %s", (p1,)).fetchone()
        assert origin_pk == "L1"

    check = matcher(env, "origins", "check", "--json")
    assert check.returncode == 0
    found = json.loads(check.stdout)
    assert [f["person_key"] for f in found] == [str(p1)]
    repaired = matcher(env, "origins", "repair", "--reason", "earlier cabinet lead found")
    assert repaired.returncode == 0, repaired.stderr
    with db.connect(autocommit=True) as c:
        origin_pk, = c.execute("select origin_source_pk from canon.identity_origin where person_key = %s", (p1,)).fetchone()
        assert origin_pk == "L0"
        hist = c.execute("select old_origin_source_pk, new_origin_source_pk, reason, run_id is not null"
                         " from canon.identity_origin_history").fetchall()
        assert hist == [("L1", "L0", "earlier cabinet lead found", True)]
    # repairing again changes nothing and writes no history
    again = matcher(env, "origins", "repair", "--reason", "again")
    assert again.returncode == 0 and "0 origins changed" in again.stdout
