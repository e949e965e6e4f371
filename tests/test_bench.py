"""The shipped benchmark runs end to end on a small database and reports what it claims."""
from __future__ import annotations

import json
import os

from conftest import ROOT, throwaway_database

from matcher import bench, config


def test_bench_rounds_phases_and_figures(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MATCHER_DBT_TARGET_PATH", str(tmp_path / "target"))
    with throwaway_database(server, "matcher_bench") as db:
        result = bench.run_benchmark(db, ROOT, config.load(project=None), leads=300, drivers=150, incremental=40,
                                     edited=12)
        with db.connect(autocommit=True) as c:
            pairs = c.execute("select count(*) from identity.identity_candidates").fetchone()[0]
            records = c.execute("select count(*) from intermediate.int_identity__records").fetchone()[0]
            # the edited drivers were rewritten by the incremental round (their e-mails are new),
            # and the no-change round after it rewrote nothing
            rewritten = c.execute(
                "select count(*), count(distinct u.load_id) from raw.drivers d"
                " join intermediate.int_identity__records_usable u on u.source_table = 'drivers' and u.source_pk = d.driver_id"
                " where d.email like 'e43.%' and not u.is_new").fetchone()
    rounds = {r["round"]: r for r in result["rounds"]}
    assert list(rounds) == ["full", "incremental_40", "no_change"]
    full = {p["phase"]: p for p in rounds["full"]["phases"]}
    assert full["generate"]["records"] == 450
    assert full["matcher_select_due"]["records"] == 450
    inc = {p["phase"]: p for p in rounds["incremental_40"]["phases"]}
    assert inc["edit_drivers"]["records"] == 12 and result["edited"] == 12
    assert rewritten == (12, 1)
    # the new leads are attempted, and so are the edited drivers that have no link (a linked
    # record keeps its link)
    assert 40 <= inc["matcher_select_due"]["records"] <= 52
    assert inc["dbt_candidates"]["pairs"] == pairs > full["dbt_candidates"]["pairs"] > 0
    assert records == 490
    # the no-change re-run writes nothing and attempts nothing
    assert rounds["no_change"]["rows_written"] == 0
    assert {p["phase"]: p for p in rounds["no_change"]["phases"]}["matcher_select_due"]["records"] == 0
    assert rounds["full"]["rows_written"] > 450 and rounds["full"]["matcher_peak_mb"] > 0
    assert {"read_pairs", "read_records", "write_links", "write_queue"} <= set(rounds["full"]["matcher_detail_seconds"])
    assert {"int_identity__blocking_keys", "identity_candidates"} <= set(rounds["full"]["dbt_model_seconds"])
    assert set(rounds["full"]["ops_view_seconds"]) == set(bench.OPS_VIEWS)
    views = {p["phase"]: p for p in rounds["full"]["phases"]}["ops_views_read"]["seconds"]
    assert abs(views - sum(rounds["full"]["ops_view_seconds"].values())) < 0.01
    for rnd in rounds.values():
        assert abs(rnd["total_seconds"] - sum(p["seconds"] for p in rnd["phases"])) < 0.01
        assert all(p["seconds"] >= 0 for p in rnd["phases"])
        # the pipeline's own time leaves out making its input (the targets time raw tables -> views)
        made = sum(p["seconds"] for p in rnd["phases"] if p["phase"] in ("generate", "append_leads", "edit_drivers"))
        assert abs(rnd["pipeline_seconds"] - (rnd["total_seconds"] - made)) < 0.01
    assert rounds["full"]["pipeline_seconds"] < rounds["full"]["total_seconds"]
    assert rounds["incremental_40"]["pipeline_seconds"] < rounds["incremental_40"]["total_seconds"]
    assert rounds["no_change"]["pipeline_seconds"] == rounds["no_change"]["total_seconds"]

    # figures: the JSON and the regenerated table between the markers, the rest of the page kept
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    (project / "docs" / "benchmark.md").write_text(f"intro\n{bench.START}\nold\n{bench.END}\noutro\n")
    path = bench.write_figures(result, project)
    assert json.loads(path.read_text())["leads"] == 300
    page = (project / "docs" / "benchmark.md").read_text()
    assert page.startswith("intro\n") and page.endswith("outro\n") and "old" not in page
    assert "| 300 | 150 | 450 |" in page and "incremental_40" in page and "| 40 + 12 drivers edited / " in page
    full_cell = f"| {rounds['full']['pipeline_seconds']:.1f} ({rounds['full']['total_seconds']:.1f}) |"
    assert full_cell in page
    # the machine's speed that day, so figures from different days can be compared
    calibration = result["machine"]["calibration_seconds"]
    assert set(calibration) == {"python", "postgres"} and all(v > 0 for v in calibration.values())
    assert f"Postgres hashing {calibration['postgres']:.2f} s" in page
    # and its huge-page policy, which matcher figures move with
    thp = result["machine"]["huge_pages"]
    # (the package turns numpy's advice off unless the user asked for it)
    assert thp["numpy_advice"] == os.environ.get("NUMPY_MADVISE_HUGEPAGE") in ("0", "1")
    if bench.THP.exists():
        assert thp["enabled"] in ("always", "madvise", "never")
        advice = {"0": "off", "1": "on"}[thp["numpy_advice"]]
        assert f"Transparent huge pages: enabled {thp['enabled']}" in page and f"numpy's advice {advice}." in page


def test_huge_page_policy_read_from_the_kernel_files(tmp_path):
    (tmp_path / "enabled").write_text("always [madvise] never\n")
    (tmp_path / "defrag").write_text("always defer [defer+madvise] madvise never\n")
    assert bench.huge_pages(tmp_path) == {"enabled": "madvise", "defrag": "defer+madvise",
                                          "numpy_advice": os.environ.get("NUMPY_MADVISE_HUGEPAGE")}
    assert bench.huge_pages(tmp_path / "absent") == {"enabled": None, "defrag": None,
                                                     "numpy_advice": os.environ.get("NUMPY_MADVISE_HUGEPAGE")}
