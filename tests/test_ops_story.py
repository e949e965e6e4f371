"""The seeds' story, replayed on generated data, read through the KPI panel."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from psycopg import sql
from conftest import env_for, throwaway_database

from matcher import backlog
from matcher.cli import cli

pytestmark = pytest.mark.slow


def status(env) -> dict:
    result = CliRunner().invoke(cli, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def gap_all(panel) -> dict:
    return next(g for g in panel["gap"] if g["lead_source_table"] == "all")


@pytest.fixture(scope="module")
def story(server, dbt_target):
    with throwaway_database(server, "matcher_story") as db:
        env = env_for(db, dbt_target)
        result = CliRunner().invoke(cli, ["pipeline", "--demo", "--leads", "1500", "--quiet-dbt"], env=env)
        assert result.exit_code == 0, result.output
        yield db, env


def test_links_without_origins_then_one_run_drains_the_gap(story, cfg):
    db, env = story
    healthy = status(env)
    floor = gap_all(healthy)["no_identity"]
    assert gap_all(healthy)["no_origin"] == 0

    # the seeds' starting point: a run wrote links, not origins (and kept the red-KPI state so)
    with db.connect(autocommit=True) as c:
        persons = c.execute("select count(*) from canon.identity_origin").fetchone()[0]
        c.execute("delete from canon.identity_origin")
        assert status(env)["backlog"] == healthy["backlog"]   # the KPI views read the last run's state
        backlog.refresh(c, cfg, None)
    broken = status(env)
    g = gap_all(broken)
    assert g["no_origin"] > g["no_identity"]            # no_origin dominates the gap
    assert g["unresolved"] == g["no_origin"] + g["no_identity"] + g["inconsistent_origin"]
    assert broken["backlog"]["size"] > healthy["backlog"]["size"]

    result = CliRunner().invoke(cli, ["run", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["origins_written"] == persons

    after = status(env)
    g2 = gap_all(after)
    assert g2["no_origin"] == 0 and g2["inconsistent_origin"] == 0
    assert g2["unresolved"] == g2["no_identity"] == floor     # down to the no_identity floor
    assert g2["pct_unresolved"] < g["pct_unresolved"]
    # the panel shows the drop, the matched count and a fresh badge
    assert after["backlog"]["size"] < broken["backlog"]["size"]
    assert after["today"]["matched_out"] > 0
    assert after["today"]["backlog_end"] == after["backlog"]["size"]
    assert after["health"]["freshness_status"] == "OK"
    assert after["health"]["recovery_status"] == "ACTIVE"
    assert after["health"]["matched_last_24h"] > 0
    # the panel renders for a person too
    text = CliRunner().invoke(cli, ["status"], env=env)
    assert text.exit_code == 0 and "Red KPI backlog" in text.output and "OK" in text.output


def test_a_claim_takes_a_lead_out_of_the_red_backlog_without_a_link(story):
    db, env = story
    with db.connect(autocommit=True) as c:
        lead_pk, = c.execute(
            "select lead_source_pk from ops.ops_kpi_red_backlog where lead_source_table = 'cabinet_leads'"
            " and gap_reason = 'no_identity' order by lead_source_pk limit 1").fetchone()
        before = status(env)
        c.execute("insert into raw.claims (claim_id, driver_id, lead_id, milestone, amount, claimed_at, status)"
                  " values ('CLAIM-TEST-1', null, %s, 1, 50, %s, 'pending')", (lead_pk, datetime.now(UTC)))

    result = CliRunner().invoke(cli, ["run", "--json"], env=env)
    assert result.exit_code == 0, result.output
    with db.connect(autocommit=True) as c:
        in_backlog = c.execute("select count(*) from ops.ops_kpi_red_backlog where lead_source_pk = %s",
                               (lead_pk,)).fetchone()[0]
        reason, = c.execute("select gap_reason from ops.ops_identity_gap_analysis where lead_source_pk = %s",
                            (lead_pk,)).fetchone()
        status_, person = c.execute("select status, matched_person_key from canon.recovery_queue"
                                    " where source_table = 'cabinet_leads' and source_pk = %s", (lead_pk,)).fetchone()
    assert in_backlog == 0
    assert reason == "no_identity"  # still without a link: the claim, not a match, took it out
    assert status_ == "claimed" and person is None
    after = status(env)
    assert after["backlog"]["size"] == before["backlog"]["size"] - 1
    assert after["today"]["claimed_out"] == before["today"]["claimed_out"] + 1
    assert after["today"]["backlog_end"] == after["backlog"]["size"]


def multiset_differences(c, columns, a: tuple[str, str], b: tuple[str, str]) -> int:
    """Rows of `columns` in relation a and not in b, plus the other way round (multiset)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    ra, rb = sql.Identifier(*a), sql.Identifier(*b)
    return c.execute(sql.SQL(
        "select count(*) from ((select {c} from {a} except all select {c} from {b})"
        " union all (select {c} from {b} except all select {c} from {a})) d"
    ).format(c=cols, a=ra, b=rb)).fetchone()[0]


def state_differences(c) -> int:
    """Leads whose kept red-KPI state differs from the live derivation."""
    return multiset_differences(c, backlog.STATE_COLUMNS, ("ops", "ops_kpi_red_lead_history"),
                                ("canon", "red_lead_history"))


def run_json(env) -> dict:
    result = CliRunner().invoke(cli, ["run", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_kept_red_state_is_the_live_derivation_and_a_rerun_rewrites_nothing(story):
    db, env = story
    run_json(env)
    with db.connect(autocommit=True) as c:
        assert c.execute("select count(*) from canon.red_lead_history").fetchone()[0] > 0
        assert state_differences(c) == 0
        # what the KPI views read (with the as_of moments) is the live view, column for column
        live_cols = [r[0] for r in c.execute(
            "select column_name from information_schema.columns where table_schema = 'ops'"
            " and table_name = 'ops_kpi_red_lead_history' order by ordinal_position")]
        assert multiset_differences(c, live_cols, ("ops", "ops_kpi_red_lead_history"),
                                    ("staging", "stg_canon__red_lead_history")) == 0
        # the recovery queue holds exactly the backlog's leads as open items
        open_items = c.execute("select count(*) from canon.recovery_queue where status in ('pending', 'failed')"
                               ).fetchone()[0]
        assert open_items == c.execute("select count(*) from ops.ops_kpi_red_backlog").fetchone()[0]
        kept = c.execute("select lead_record_uid, updated_run_id, updated_at from canon.red_lead_history"
                         " order by 1").fetchall()
    again = run_json(env)
    assert again["rows_written"] == 0
    with db.connect(autocommit=True) as c:
        assert c.execute("select lead_record_uid, updated_run_id, updated_at from canon.red_lead_history"
                         " order by 1").fetchall() == kept


def test_a_run_rewrites_the_red_state_of_exactly_the_leads_that_changed(story):
    db, env = story
    with db.connect(autocommit=True) as c:
        # a lead in the backlog gets a claim; a person with two or more leads loses its origin
        claimed_uid, claimed_pk = c.execute(
            "select lead_record_uid, lead_source_pk from ops.ops_kpi_red_backlog"
            " where lead_source_table = 'cabinet_leads' order by lead_source_pk desc limit 1").fetchone()
        person, = c.execute(
            "select l.person_key from canon.identity_links l join canon.identity_origin o using (person_key)"
            " where l.source_table <> 'drivers' group by l.person_key having count(*) >= 2"
            " order by l.person_key limit 1").fetchone()
        person_leads = {r[0] for r in c.execute(
            "select record_uid from canon.identity_links where person_key = %s and source_table <> 'drivers'",
            (person,))}
        c.execute("insert into raw.claims (claim_id, driver_id, lead_id, milestone, amount, claimed_at, status)"
                  " values ('CLAIM-TEST-2', null, %s, 1, 50, now(), 'pending')", (claimed_pk,))
        c.execute("delete from canon.identity_origin where person_key = %s", (person,))
    result = run_json(env)
    assert result["origins_written"] == 1
    with db.connect(autocommit=True) as c:
        rewritten = {r[0] for r in c.execute(
            "select lead_record_uid from canon.red_lead_history where updated_run_id = %s", (result["run_id"],))}
        assert rewritten == person_leads | {claimed_uid}
        assert state_differences(c) == 0
        in_backlog, = c.execute("select is_in_backlog from canon.red_lead_history where lead_record_uid = %s",
                                (claimed_uid,)).fetchone()
        queue_status, = c.execute("select status from canon.recovery_queue where source_table = 'cabinet_leads'"
                                  " and source_pk = %s", (claimed_pk,)).fetchone()
    assert not in_backlog and queue_status == "claimed"



def derived_at(c):
    row = c.execute("select derived_at from canon.red_lead_history_inputs").fetchone()
    return row[0] if row else None


def test_a_run_over_unchanged_inputs_does_not_derive_the_red_state_again(story, cfg):
    db, env = story
    run_json(env)
    with db.connect(autocommit=True) as c:
        assert backlog.inputs_fingerprint(c, cfg) is not None   # every table the live view reads is covered
        kept = derived_at(c)
    assert kept is not None
    # a run over the same data, and a dbt build that changes nothing (views recreated, same definitions)
    assert run_json(env)["rows_written"] == 0
    result = CliRunner().invoke(cli, ["dbt", "run", "--quiet", "--select", "ops_kpi_red_lead_history+",
                                      "ops_kpi_red_lead_inputs"], env=env)
    assert result.exit_code == 0, result.output
    assert run_json(env)["rows_written"] == 0
    with db.connect(autocommit=True) as c:
        assert derived_at(c) == kept
        assert state_differences(c) == 0


@pytest.mark.parametrize("change", ["claim", "origin_by_hand", "kept_state_by_hand", "lead_edited"])
def test_any_change_to_what_the_red_state_reads_derives_it_again(story, change):
    db, env = story
    run_json(env)
    with db.connect(autocommit=True) as c:
        kept = derived_at(c)
        if change == "claim":
            lead_pk, = c.execute("select lead_source_pk from ops.ops_kpi_red_backlog"
                                 " where lead_source_table = 'cabinet_leads' order by lead_source_pk limit 1").fetchone()
            c.execute("insert into raw.claims (claim_id, driver_id, lead_id, milestone, amount, claimed_at, status)"
                      " values ('CLAIM-TEST-3', null, %s, 1, 50, now(), 'pending')", (lead_pk,))
        elif change == "origin_by_hand":
            # one statement that deletes no row leaves the counter alone, one that deletes does not
            version = c.execute("select version from canon.table_versions where table_name = 'identity_origin'"
                                ).fetchone()
            c.execute("delete from canon.identity_origin where false")
            assert c.execute("select version from canon.table_versions where table_name = 'identity_origin'"
                             ).fetchone() == version
            c.execute("delete from canon.identity_origin where person_key ="
                      " (select person_key from canon.identity_origin order by person_key limit 1)")
        elif change == "kept_state_by_hand":
            c.execute("delete from canon.red_lead_history where lead_record_uid ="
                      " (select min(lead_record_uid) from canon.red_lead_history)")
        else:
            # a lead's date moves: dbt rewrites its record, the lead's state (lead_at) changes
            c.execute("update raw.cabinet_leads set created_at = created_at - interval '1 day' where lead_id ="
                      " (select min(lead_id) from raw.cabinet_leads)")
            result = CliRunner().invoke(cli, ["dbt", "run", "--quiet", "--select", "int_identity__records"], env=env)
            assert result.exit_code == 0, result.output
        assert state_differences(c) > 0 or change == "origin_by_hand"
    result = run_json(env)
    with db.connect(autocommit=True) as c:
        assert derived_at(c) != kept
        assert state_differences(c) == 0
    assert result["rows_written"] > 0


def test_without_its_inputs_view_the_red_state_is_derived_every_run(story, cfg):
    db, env = story
    with db.connect(autocommit=True) as c:
        c.execute("drop view ops.ops_kpi_red_lead_inputs")
        assert backlog.inputs_fingerprint(c, cfg) is None
    try:
        run_json(env)
        with db.connect(autocommit=True) as c:
            first = derived_at(c)
            assert first is None   # no fingerprint kept: nothing to compare the next run with
            c.execute("delete from canon.red_lead_history where lead_record_uid ="
                      " (select min(lead_record_uid) from canon.red_lead_history)")
        run_json(env)
        with db.connect(autocommit=True) as c:
            assert state_differences(c) == 0
    finally:
        result = CliRunner().invoke(cli, ["dbt", "run", "--quiet", "--select", "ops_kpi_red_lead_inputs"], env=env)
        assert result.exit_code == 0, result.output

def test_report_and_diagnose(story, tmp_path):
    db, env = story
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<svg" in page and "<polyline" in page and "Red KPI backlog" in page
    with db.connect(autocommit=True) as c:
        backlog = c.execute("select count(*) from ops.ops_kpi_red_backlog").fetchone()[0]
        raw_phones = [r[0] for r in c.execute("select phone from raw.cabinet_leads where phone is not null limit 200")]
    assert f"{backlog:,}" in page
    assert not any(p in page for p in raw_phones if len(p) >= 6)
    diag = CliRunner().invoke(cli, ["diagnose", "--json"], env=env)
    assert diag.exit_code == 0, diag.output
    d = json.loads(diag.output)["diagnostics"]
    assert d["recent_runs"][0]["status"] == "succeeded"
    assert d["links_without_origin"] == 0 and d["inconsistent_origins"] == 0
