"""Claims that name a lead tie it to the claim's driver (int_identity__claim_attributions, the
`claim` field and the `claim_attribution` rule), on small hand-written raw data."""
from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import subprocess_env, throwaway_database
from test_decisions import T0, build_and_run, driver, last_attempt, lead, person_of

from matcher import demo
from matcher.migrate import migrate

pytestmark = pytest.mark.slow


def claim(c, key, driver_id, lead_id, days, status="paid"):
    c.execute("insert into raw.claims values (%s, %s, %s, 1, 100, %s, %s)",
              (key, driver_id, lead_id, T0 + timedelta(days=days), status))


def link_of(c, table, pk):
    return c.execute("select person_key, match_rule, confidence, evidence from canon.identity_links"
                     " where source_table = %s and source_pk = %s", (table, pk)).fetchone()


@pytest.fixture
def world(server, dbt_target):
    with throwaway_database(server, "matcher_claims") as db:
        with db.connect(autocommit=True) as c:
            migrate(c, "canon")
            demo.create_raw_schema(c, "raw")
            # a lead form with every field empty, and the driver a paid claim names it for
            lead(c, "L1", 0, None, None)
            driver(c, "D1", 5, "Rosa Flores Vega", "987000001", "40000001")
            claim(c, "C1", "D1", "L1", 9)
            # the same through a scout registration: a claim's lead_id is looked up in every lead table
            c.execute("insert into raw.scout_registrations values ('S2', %s, 'SC9', null, null, null, null)",
                      (T0 + timedelta(days=1),))
            driver(c, "D2", 6, "Luis Paredes Soto", "987000002", "40000002")
            claim(c, "C2", "D2", "S2", 10)
            # a claim for a lead whose document clearly is not the driver's: not linked on the claim
            lead(c, "L3", 0, "Mario", "Quispe", None, "71112223")
            driver(c, "D3", 5, "Mario Quispe", "987000003", "40999999")
            claim(c, "C3", "D3", "L3", 9)
            # only a rejected claim names this one: it does not count
            lead(c, "L4", 0, None, None)
            driver(c, "D4", 5, "Julia Ramos Diaz", "987000004", "40000004")
            claim(c, "C4", "D4", "L4", 9, status="rejected")
            # claims name this lead for two drivers: neither is taken
            lead(c, "L5", 0, None, None)
            claim(c, "C5a", "D1", "L5", 9)
            claim(c, "C5b", "D2", "L5", 9)
            # no claim names it yet (a later run's claim will)
            lead(c, "L6", 0, None, None)
            driver(c, "D6", 5, "Pedro Huaman Soto", "987000006", "40000006")
            # a claim naming a lead that does not exist: nothing to tie
            claim(c, "C7", "D6", "NOPE", 9)
        yield db, subprocess_env(db, dbt_target)


def test_a_claim_ties_the_lead_it_names_to_its_driver(world):
    db, env = world
    build_and_run(env)
    with db.connect(autocommit=True) as c:
        # an empty lead form, placed by the claim alone
        d1, l1 = person_of(c, "drivers", "D1"), link_of(c, "cabinet_leads", "L1")
        assert d1 is not None and l1 is not None and l1[0] == d1
        assert l1[1] == "claim_attribution" and l1[2] == "medium"
        assert l1[3]["claim"] == "exact" and l1[3]["name"] == "missing"
        # it is the earliest lead of that person: her origin
        origin = c.execute("select origin_tag, origin_source_pk from canon.identity_origin where person_key = %s",
                           (d1,)).fetchone()
        assert origin == ("cabinet_lead", "L1")
        assert person_of(c, "scout_registrations", "S2") == person_of(c, "drivers", "D2") is not None
        # the claim does not outweigh a document that differs: a failed attempt, not a link
        assert person_of(c, "cabinet_leads", "L3") is None
        assert last_attempt(c, "cabinet_leads", "L3") == ("failed", "below_threshold")
        # a rejected claim and a self-contradicting pair of claims tie nothing
        for pk in ("L4", "L5", "L6"):
            assert person_of(c, "cabinet_leads", pk) is None, pk
            assert last_attempt(c, "cabinet_leads", pk) == ("failed", "missing_identifiers"), pk
        attributed = dict(c.execute(
            "select source_pk, claim_driver_id from intermediate.int_identity__records_usable"
            " where source_table <> 'drivers'").fetchall())
        assert attributed == {"L1": "D1", "S2": "D2", "L3": "D3", "L4": None, "L5": None, "L6": None}

        # a claim that names an already loaded lead makes it a changed record: the next run links it
        claim(c, "C6", "D6", "L6", 12)
    second = build_and_run(env)
    with db.connect(autocommit=True) as c:
        assert person_of(c, "cabinet_leads", "L6") == person_of(c, "drivers", "D6") is not None
        assert link_of(c, "cabinet_leads", "L6")[1] == "claim_attribution"
        # and only that record was due: nothing else changed
        assert second["processed"] == 1, second
        # the claim removed again: the lead's record changes back, its link stays (links are
        # undone by a human decision, not by a lost claim)
        c.execute("delete from raw.claims where claim_id = 'C6'")
    build_and_run(env)
    with db.connect(autocommit=True) as c:
        assert person_of(c, "cabinet_leads", "L6") == person_of(c, "drivers", "D6")
        assert c.execute("select claim_driver_id from intermediate.int_identity__records_usable"
                         " where source_pk = 'L6'").fetchone()[0] is None
