"""The seeds' story, replayed on generated data, read through the KPI panel."""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from conftest import call_without_waiting, env_for, throwaway_database

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


def derived_leads(c):
    """How many leads the last refresh derived (None: every lead)."""
    return c.execute("select derived_leads from canon.red_lead_history_inputs").fetchone()[0]


def build_and_run(env) -> dict:
    result = CliRunner().invoke(cli, ["dbt", "run", "--quiet"], env=env)
    assert result.exit_code == 0, result.output
    return run_json(env)


def test_a_refresh_derives_only_the_leads_changes_reached_and_keeps_the_live_state(story, cfg):
    """Every kind of change at once; the refresh derives the leads they reach, and the state it
    keeps is the live view's for every lead (not only for those)."""
    db, env = story
    run_json(env)
    with db.connect(autocommit=True) as c:
        leads = c.execute("select count(*) from canon.red_lead_history").fetchone()[0]
        # a person with two or more leads and a linked driver
        person, = c.execute(
            "select l.person_key from canon.identity_links l where l.source_table <> 'drivers'"
            " and exists (select 1 from canon.identity_links d where d.person_key = l.person_key"
            "   and d.source_table = 'drivers')"
            " group by l.person_key having count(*) >= 2 order by l.person_key limit 1").fetchone()
        driver_pk, = c.execute("select source_pk from canon.identity_links where person_key = %s"
                               " and source_table = 'drivers' limit 1", (person,)).fetchone()
        # claims: one removed, one re-dated, one on the driver of that person (covers its leads)
        c.execute("delete from raw.claims where claim_id = (select min(claim_id) from raw.claims where lead_id is not null)")
        c.execute("update raw.claims set claimed_at = claimed_at - interval '3 days'"
                  " where claim_id = (select max(claim_id) from raw.claims where lead_id is not null)")
        c.execute("insert into raw.claims (claim_id, driver_id, lead_id, milestone, amount, claimed_at, status)"
                  " values ('CLAIM-SCOPE-1', %s, null, 1, 50, now() - interval '1 day', 'pending')", (driver_pk,))
        # the person's origin points at a later record by hand (inconsistent), another loses a link
        c.execute("update canon.identity_origin set decided_at = decided_at + interval '1 second'"
                  " where person_key = %s", (person,))
        unlinked, = c.execute(
            "delete from canon.identity_links where record_uid = (select max(l.record_uid)"
            " from canon.identity_links l where l.source_table = 'cabinet_leads' and l.person_key <> %s)"
            " returning record_uid", (person,)).fetchone()
        # a lead gone from raw, a lead re-dated, a new lead of an existing person
        c.execute("delete from raw.cabinet_leads where lead_id = (select min(lead_id) from raw.cabinet_leads)")
        c.execute("update raw.scout_registrations set registered_at = registered_at - interval '2 days'"
                  " where registration_id = (select min(registration_id) from raw.scout_registrations)")
        c.execute("insert into raw.cabinet_leads select lead_id || '-again', created_at + interval '1 hour', first_name,"
                  " last_name, phone, document_number, email, license_plate from raw.cabinet_leads"
                  " where lead_id = (select max(lead_id) from raw.cabinet_leads)")
    result = build_and_run(env)
    assert result["rows_written"] > 0
    with db.connect(autocommit=True) as c:
        scoped = derived_leads(c)
        assert scoped is not None and 0 < scoped < leads / 5
        assert state_differences(c) == 0
        assert c.execute("select count(*) from canon.recovery_queue where status in ('pending', 'failed')"
                         ).fetchone()[0] == c.execute("select count(*) from ops.ops_kpi_red_backlog").fetchone()[0]
        # what it read is gone from the change log; the scope is empty to everyone else
        assert c.execute("select count(*) from canon.red_lead_changes").fetchone()[0] == 0
        assert c.execute("select count(*) from canon.red_lead_scope").fetchone()[0] == 0
        # the unlinked lead is back in the backlog (its latest attempt matched: not retried)
        assert c.execute("select is_in_backlog from canon.red_lead_history where lead_record_uid = %s",
                         (unlinked,)).fetchone() == (True,)
    # a run that marks "every lead" (as one about to rewrite most of them does) derives every lead
    with db.connect(autocommit=True) as c:
        backlog.expect_changes(c, cfg, 10 ** 9)
        c.execute("update canon.identity_origin set decided_at = decided_at + interval '1 second'"
                  " where person_key = %s", (person,))
        assert c.execute("select count(*) from canon.red_lead_changes").fetchone()[0] == 1  # the mark only
        backlog.refresh(c, cfg, None)
        assert derived_leads(c) is None and state_differences(c) == 0


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


CHANGES = ["claim", "claim_removed", "claim_redated", "driver_claim", "origin_by_hand", "origin_redated",
           "link_removed", "kept_state_by_hand", "lead_edited", "lead_deleted"]


def make_change(c, env, change: str) -> None:
    """One change to what the red-KPI state reads, picked so that it changes some lead's state."""
    def covered_lead(by: str):
        # a cabinet lead covered by claims on it (by='lead') and by no driver claim
        return c.execute(
            "select h.lead_source_pk from canon.red_lead_history h where h.lead_source_table = 'cabinet_leads'"
            " and h.claim_covered_at is not null and exists (select 1 from raw.claims k where k.lead_id = h.lead_source_pk)"
            " and not exists (select 1 from canon.identity_links l join canon.identity_links d"
            "   on d.person_key = l.person_key and d.source_table = 'drivers'"
            "   join raw.claims k on k.driver_id = d.source_pk where l.record_uid = h.lead_record_uid)"
            " order by h.lead_source_pk limit 1").fetchone()[0]

    if change == "claim":
        lead_pk, = c.execute("select lead_source_pk from ops.ops_kpi_red_backlog"
                             " where lead_source_table = 'cabinet_leads' order by lead_source_pk limit 1").fetchone()
        c.execute("insert into raw.claims (claim_id, driver_id, lead_id, milestone, amount, claimed_at, status)"
                  " values ('CLAIM-TEST-3', null, %s, 1, 50, now(), 'pending')", (lead_pk,))
    elif change == "claim_removed":
        c.execute("delete from raw.claims where lead_id = %s", (covered_lead("lead"),))
    elif change == "claim_redated":
        c.execute("update raw.claims set claimed_at = claimed_at - interval '1 hour' where lead_id = %s",
                  (covered_lead("lead"),))
    elif change == "driver_claim":
        # the driver of a person whose leads no claim covers yet: its claim covers them all
        driver_pk, = c.execute(
            "select d.source_pk from canon.identity_links d join canon.identity_links l"
            " on l.person_key = d.person_key and l.source_table <> 'drivers'"
            " join canon.red_lead_history h on h.lead_record_uid = l.record_uid"
            " where d.source_table = 'drivers' group by d.source_pk"
            " having bool_and(h.claim_covered_at is null) order by d.source_pk limit 1").fetchone()
        c.execute("insert into raw.claims (claim_id, driver_id, lead_id, milestone, amount, claimed_at, status)"
                  " values ('CLAIM-TEST-4', %s, null, 1, 50, now() - interval '1 day', 'pending')", (driver_pk,))
    elif change == "origin_by_hand":
        # one statement that deletes no row leaves the counter alone, one that deletes does not
        version = c.execute("select version from canon.table_versions where table_name = 'identity_origin'"
                            ).fetchone()
        c.execute("delete from canon.identity_origin where false")
        assert c.execute("select version from canon.table_versions where table_name = 'identity_origin'"
                         ).fetchone() == version
        c.execute("delete from canon.identity_origin where person_key ="
                  " (select person_key from canon.identity_origin order by person_key limit 1)")
    elif change == "origin_redated":
        # a person with two resolved leads: the origin's date moves both leads' resolved_at
        c.execute("update canon.identity_origin set decided_at = decided_at + interval '1 day' where person_key = ("
                  " select l.person_key from canon.identity_links l join canon.red_lead_history h"
                  " on h.lead_record_uid = l.record_uid where h.gap_reason = 'resolved'"
                  " group by l.person_key having count(*) >= 2 order by l.person_key limit 1)")
    elif change == "link_removed":
        # a lead of a person with two leads, not its origin, loses its link (not retried: its
        # latest attempt matched) and goes back to the backlog
        c.execute("delete from canon.identity_links where record_uid = ("
                  " select min(l.record_uid) from canon.identity_links l join canon.identity_origin o using (person_key)"
                  " where l.source_table <> 'drivers' and l.source_pk <> o.origin_source_pk"
                  " and l.person_key in (select person_key from canon.identity_links where source_table <> 'drivers'"
                  "   group by person_key having count(*) >= 2))")
    elif change == "kept_state_by_hand":
        c.execute("delete from canon.red_lead_history where lead_record_uid ="
                  " (select min(lead_record_uid) from canon.red_lead_history)")
    else:
        if change == "lead_edited":
            # a lead's date moves: dbt rewrites its record, the lead's state (lead_at) changes
            c.execute("update raw.cabinet_leads set created_at = created_at - interval '1 day' where lead_id ="
                      " (select min(lead_id) from raw.cabinet_leads)")
        else:
            c.execute("delete from raw.cabinet_leads where lead_id = (select max(lead_id) from raw.cabinet_leads)")
        result = CliRunner().invoke(cli, ["dbt", "run", "--quiet", "--select", "int_identity__records"], env=env)
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_to_what_the_red_state_reads_derives_it_again(story, change):
    db, env = story
    run_json(env)
    with db.connect(autocommit=True) as c:
        kept = derived_at(c)
        make_change(c, env, change)
        # the change matters: the kept state is now wrong for some lead (so a refresh that
        # missed that lead would leave a difference behind)
        assert state_differences(c) > 0 or change == "origin_by_hand"
    result = run_json(env)
    with db.connect(autocommit=True) as c:
        assert derived_at(c) != kept
        assert state_differences(c) == 0
        # only the leads the change reached are derived; a hand edit of the kept state itself
        # cannot be traced to leads, so every lead is
        if change == "kept_state_by_hand":
            assert derived_leads(c) is None
        else:
            assert 0 < derived_leads(c) <= 20
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


def rescanned_scans(node: dict, inner: bool = False) -> list[dict]:
    """Scan nodes on the inner side of a nested loop, run again (or, under a Materialize, read
    again) for every outer row; a Hash in between is built once and probed by key."""
    if node["Node Type"] == "Hash":
        return []
    found = [node] if inner and "Scan" in node["Node Type"] else []
    children = node.get("Plans", [])
    for i, child in enumerate(children):
        found += rescanned_scans(child, inner or (node["Node Type"] == "Nested Loop" and i == 1))
    return found


def probe_condition(scan: dict) -> str:
    if scan["Node Type"] == "Bitmap Heap Scan":
        return " ".join(c.get("Index Cond", "") for c in scan.get("Plans", []))
    return scan.get("Index Cond", "")


@pytest.mark.parametrize("name", [n for n in backlog.KEEP_STATEMENTS if n.startswith("queue_")])
def test_queue_writes_probe_by_key_while_statistics_have_not_seen_the_run(story, cfg, name):
    """Right after a run writes its attempts, the statistics know nothing of its run id, so the
    planner takes this run's attempts for a row or two. Whatever join it picks then, the queue
    and the attempt log must be reached per row by an index probe on the row's key, never by a
    scan re-run for every row (seen at 1M leads: 11,686 attempts x a full scan of a 491k-item
    queue, over three minutes; and a probe by run id alone walked all the run's attempts per lead)."""
    db, env = story
    run_json(env)
    canon = sql.Identifier(cfg.canon_schema)
    compared = [c for c in backlog.STATE_COLUMNS if c != "lead_record_uid"]
    with db.connect() as c:
        c.execute(sql.SQL("analyze {}.match_attempts, {}.recovery_queue").format(canon, canon))
        unseen_run = c.execute(sql.SQL("select max(run_id) + 1 from {}.match_runs").format(canon)).fetchone()[0]
        # lead_state_changed as a refresh leaves it: one row per lead whose state changed
        c.execute(sql.SQL("create temp table lead_state_changed as select lead_record_uid, false as is_gone,"
                          " false as is_new, {} from {}.red_lead_history").format(
            sql.SQL(", ").join(map(sql.Identifier, compared)), canon))
        c.execute("create index on lead_state_changed using hash (lead_source_pk)")
        c.execute("analyze lead_state_changed")
        c.execute("set local enable_hashjoin = off")
        c.execute("set local enable_mergejoin = off")
        plan = c.execute(sql.SQL("explain (format json) {}").format(backlog.keep_statement(cfg, name)),
                         {"run": unseen_run}).fetchone()[0][0]["Plan"]
        c.rollback()
    probes = [s for s in rescanned_scans(plan) if s.get("Relation Name") in ("match_attempts", "recovery_queue")]
    for scan in probes:
        assert "Index" in scan["Node Type"] or scan["Node Type"] == "Bitmap Heap Scan", (name, scan)
        assert any(key in probe_condition(scan) for key in ("record_uid", "md5(")), (name, scan)


def test_runs_are_never_removed_and_every_run_reference_is_tested(story, cfg, capfd):
    """Run references are not foreign keys (migration 0009: checked per row, they cost more than
    the writes): runs cannot be deleted or truncated, and dbt's source tests catch a row that
    names a run that does not exist."""
    db, env = story
    canon = sql.Identifier(cfg.canon_schema)
    with db.connect() as c:
        for statement in ("delete from {}.match_runs where run_id = (select min(run_id) from {}.match_runs)",
                          "truncate {}.match_runs cascade"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="runs are never deleted"):
                c.execute(sql.SQL(statement).format(canon, canon))
            c.rollback()
        assert c.execute(sql.SQL("select count(*) from {}.match_runs").format(canon)).fetchone()[0] > 0

    test_registry = ["dbt", "test", "--quiet", "--select", "source:canon.identity_registry"]
    assert CliRunner().invoke(cli, test_registry, env=env).exit_code == 0
    person = "00000000-0000-0000-0000-00000000d0d0"
    with db.connect(autocommit=True) as c:
        c.execute(sql.SQL("insert into {}.identity_registry (person_key, created_by_run)"
                          " select %s, max(run_id) + 1000 from {}.match_runs").format(canon, canon), (person,))
    try:
        capfd.readouterr()
        result = CliRunner().invoke(cli, test_registry, env=env)
        assert result.exit_code != 0
        dbt_output = capfd.readouterr().out   # dbt writes to the process's stdout
        assert "FAIL 1 source_relationships_canon_identity_registry_created_by_run" in dbt_output, dbt_output
    finally:
        with db.connect(autocommit=True) as c:
            c.execute(sql.SQL("delete from {}.identity_registry where person_key = %s").format(canon), (person,))
    assert CliRunner().invoke(cli, test_registry, env=env).exit_code == 0


def kept_index_definitions(c, cfg) -> list[tuple]:
    """The kept tables' indexes, with the constraint each backs."""
    return c.execute(
        "select t.relname, pg_get_indexdef(i.indexrelid), con.conname, pg_get_constraintdef(con.oid)"
        " from pg_index i join pg_class t on t.oid = i.indrelid join pg_namespace n on n.oid = t.relnamespace"
        " left join pg_constraint con on con.conindid = i.indexrelid and con.conrelid = t.oid"
        " where n.nspname = %s and t.relname = any(%s) order by 1, 2",
        (cfg.canon_schema, list(backlog.LOADED_TABLES))).fetchall()


# how the refresh loads the emptied kept tables: what it says
LOAD_CASES = {
    "alone": "indexes built after",
    "read-meanwhile": "in use by another session",
    "not-owner": "not owned by this user",
}


@pytest.mark.parametrize("case", list(LOAD_CASES))
def test_a_refresh_into_empty_kept_tables_builds_their_indexes_after_the_load(story, cfg, caplog, case):
    """A refresh of every lead into empty kept tables (the first one) loads them, then builds
    their indexes in the same transaction: the same indexes and constraints as before (the
    queue's unique index too, which the seed then goes without), the state of the live view, the
    backlog's leads queued once each. While another session reads one of them, it takes no lock
    it would wait for, and a user that may write the tables but not drop their indexes does not
    fail: both load them with their indexes. (Rolled back: the story is unchanged.)"""
    db, env = story
    canon = sql.Identifier(cfg.canon_schema)
    with db.connect() as c, db.connect() as other:
        indexes = kept_index_definitions(c, cfg)
        assert {row[0] for row in indexes} == set(backlog.LOADED_TABLES)
        if case == "read-meanwhile":
            # its transaction holds an access share lock on the table until it ends
            other.execute(sql.SQL("select count(*) from {}.red_lead_claims").format(canon))
        for table in ("red_lead_history_inputs", *backlog.LOADED_TABLES):
            c.execute(sql.SQL("delete from {}.{}").format(canon, sql.Identifier(table)))
        if case == "not-owner":
            # a role that reads and writes every table but owns none (created in this transaction)
            role = sql.Identifier("matcher_t_not_owner")
            c.execute(sql.SQL("create role {}").format(role))
            c.execute(sql.SQL("grant temporary on database {} to {}").format(sql.Identifier(c.info.dbname), role))
            for (schema,) in c.execute("select nspname from pg_namespace where nspname not like 'pg\\_%'"
                                       " and nspname <> 'information_schema'").fetchall():
                for grant in ("grant usage on schema {s} to {r}",
                              "grant select, insert, update, delete on all tables in schema {s} to {r}",
                              "grant usage on all sequences in schema {s} to {r}"):
                    c.execute(sql.SQL(grant).format(s=sql.Identifier(schema), r=role))
            c.execute(sql.SQL("set role {}").format(role))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="matcher.backlog"):
            written, waited = call_without_waiting(lambda: backlog.refresh(c, cfg, None), other.rollback)
        assert not waited, "the refresh waited for another session's lock"
        assert written and written[0] > 0
        c.execute("reset role")
        assert [k for k, said in LOAD_CASES.items() if said in caplog.text] == [case], caplog.text
        assert kept_index_definitions(c, cfg) == indexes
        assert state_differences(c) == 0
        open_items = c.execute(sql.SQL("select count(*) from {}.recovery_queue where status in ('pending', 'failed')"
                                       ).format(canon)).fetchone()[0]
        assert open_items == c.execute("select count(*) from ops.ops_kpi_red_backlog").fetchone()[0] > 0
        assert c.execute(sql.SQL("select count(*) = count(distinct (source_table, source_pk)) from {}.recovery_queue"
                                 ).format(canon)).fetchone()[0]
        claims = c.execute(sql.SQL("select count(*) from {}.red_lead_claims").format(canon)).fetchone()[0]
        assert claims == c.execute("select count(*) from (select distinct * from ops.ops_kpi_red_lead_claims) d").fetchone()[0] > 0
        c.rollback()
        other.rollback()
