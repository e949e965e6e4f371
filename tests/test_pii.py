"""No personal data leaks: what the matcher prints, logs and stores shows no raw identifier.

One database runs the demo pipeline through the CLI with info logging (`-v`), then every
read command and a failing one; everything they printed (stdout and stderr), dbt's output
and log file, and every row of every matcher-owned table (evidence, run errors, run
parameters, attempts, queue, conflicts ...) is scanned for every phone (as typed and
normalized), document number, e-mail and full name (5+ characters) of the raw tables.
"""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT, subprocess_env, throwaway_database
from psycopg import sql

pytestmark = pytest.mark.slow

LEADS = 400
MIN_LENGTH = 5


def matcher(env, *args):
    proc = subprocess.run([sys.executable, "-m", "matcher", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return proc


def raw_pii(c) -> dict[str, set[str]]:
    """Every personal value of the raw tables, as typed and as the staging models normalize it."""
    queries = {
        "phone": [
            "select phone from raw.cabinet_leads union select phone from raw.scout_registrations"
            " union select phone from raw.fleet_migrations union select phone from raw.drivers",
            "select phone from staging.stg_raw__cabinet_leads union select phone from staging.stg_raw__drivers"
            " union select phone from staging.stg_raw__scout_registrations"
            " union select phone from staging.stg_raw__fleet_migrations",
        ],
        "document": [
            "select document_number from raw.cabinet_leads union select document_number from raw.scout_registrations"
            " union select document_number from raw.fleet_migrations union select license_number from raw.drivers",
            "select document_number from staging.stg_raw__cabinet_leads"
            " union select document_number from staging.stg_raw__drivers"
            " union select document_number from staging.stg_raw__scout_registrations"
            " union select document_number from staging.stg_raw__fleet_migrations",
        ],
        "email": [
            "select email from raw.cabinet_leads union select email from raw.drivers",
            "select email from staging.stg_raw__cabinet_leads union select email from staging.stg_raw__drivers",
        ],
        "name": [
            "select concat_ws(' ', first_name, last_name) from raw.cabinet_leads"
            " union select full_name from raw.scout_registrations union select full_name from raw.fleet_migrations"
            " union select full_name from raw.drivers",
            "select full_name from staging.stg_raw__cabinet_leads union select full_name from staging.stg_raw__drivers"
            " union select full_name from staging.stg_raw__scout_registrations"
            " union select full_name from staging.stg_raw__fleet_migrations",
        ],
    }
    found: dict[str, set[str]] = {}
    for kind, qs in queries.items():
        values = set()
        for q in qs:
            values |= {v.strip() for (v,) in c.execute(q) if v and len(v.strip()) >= MIN_LENGTH}
        if kind in ("phone", "document"):
            # placeholders ('SIN DATO', '00000000', '999999999') identify no one, and dbt's
            # compiled SQL names them on purpose
            values = {v for v in values if re.search(r"[0-9]", v) and len(set(re.sub(r"[^0-9A-Za-z]", "", v))) > 2}
        found[kind] = values
    return found


# a run of this many digits is a 64-bit hash or record uid (no phone or document is that long)
HASH_DIGITS = 15


def _found(value: str, text: str) -> bool:
    """Whether `value` is in `text` (lower-cased), other than as a piece of a 64-bit number: the
    matcher's tables hold record uids and hashes (19 digits), in which an 8-digit document turns
    up by chance (about once in 10^8 per position: a few hundred positions per uid)."""
    if value not in text:
        return False
    if not value.isdigit():
        return True
    for hit in re.finditer(re.escape(value), text):
        start, end = hit.start(), hit.end()
        while start > 0 and text[start - 1].isdigit():
            start -= 1
        while end < len(text) and text[end].isdigit():
            end += 1
        if end - start < HASH_DIGITS:
            return True
    return False


def find_leaks(corpus: dict[str, str], pii: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """(where, kind, masked value) for every personal value found in the corpus (case-insensitive)."""
    leaks = []
    for where, text in corpus.items():
        lowered = text.lower()
        for kind, values in pii.items():
            for value in values:
                if _found(value.lower(), lowered):
                    leaks.append((where, kind, value[:2] + "***" + value[-2:]))
    return leaks


@pytest.fixture(scope="module")
def corpus(server, tmp_path_factory):
    """Everything the CLI printed and logged, and every row of the matcher's tables; plus the raw PII."""
    target = tmp_path_factory.mktemp("pii-dbt-target")  # a dbt log of this module only
    with throwaway_database(server, "matcher_pii") as db:
        # wide lines: rich must not wrap a value across two lines and hide it from the scan
        env = subprocess_env(db, target) | {"COLUMNS": "4000"}
        out: dict[str, str] = {}

        def step(label, *args, expect=0):
            proc = matcher(env, *args)
            assert proc.returncode == expect, (label, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
            out[label] = proc.stdout + "\n" + proc.stderr
            return proc

        step("migrate", "-v", "migrate")
        step("demo-data", "-v", "demo-data", "--leads", str(LEADS), "--mess", "hard")
        step("dbt build", "-v", "dbt", "build")
        step("run", "-v", "run")
        step("run again (nothing to do)", "-v", "run", "--json")
        step("status", "-v", "status")
        step("status --json", "-v", "status", "--json")
        step("evaluate", "-v", "evaluate")
        step("evaluate --json", "-v", "evaluate", "--json")
        step("origins check", "-v", "origins", "check")
        step("origins check --json", "-v", "origins", "check", "--json")
        step("origins backfill", "-v", "origins", "backfill")
        step("origins repair", "-v", "origins", "repair", "--reason", "pii scan")
        step("db", "-v", "db")
        with db.connect(autocommit=True) as c:
            c.execute("alter table identity.identity_candidates drop column blocking_mask")
        step("run with a broken candidate table", "-v", "run", expect=6)
        step("run with a broken candidate table, debug", "-vv", "run", expect=6)
        with db.connect(autocommit=True) as c:
            c.execute("alter table identity.identity_candidates add column blocking_mask smallint")
        step("pipeline", "-v", "pipeline", "--quiet-dbt")
        dbt_log = target / "logs" / "dbt.log"
        assert dbt_log.exists()
        out["dbt.log"] = dbt_log.read_text(errors="replace")

        tables = {}
        with db.connect(autocommit=True) as c:
            names = [t for (t,) in c.execute("select tablename from pg_tables where schemaname = 'canon' order by 1")]
            for name in names:
                rows = c.execute(sql.SQL("select t::text from {} t").format(sql.Identifier("canon", name))).fetchall()
                tables[name] = len(rows)
                out[f"canon.{name}"] = "\n".join(r for (r,) in rows)
            pii = raw_pii(c)
            evidence = c.execute("select distinct e.key, jsonb_typeof(e.value),"
                                 " case when jsonb_typeof(e.value) = 'string' then e.value #>> '{}' end"
                                 " from canon.identity_links, jsonb_each(evidence) e").fetchall()
        tables["evidence"] = evidence
        yield out, tables, pii


def test_the_scan_is_not_vacuous(corpus):
    out, tables, pii = corpus
    assert all(len(values) > 100 for values in pii.values()), {k: len(v) for k, v in pii.items()}
    assert tables["identity_links"] > LEADS / 2 and tables["match_attempts"] > LEADS and tables["match_runs"] >= 5
    assert "linked" in out["run"] and "error:" in out["run with a broken candidate table"]
    assert "INFO" in out["run"] and "INFO" in out["dbt build"]  # -v logging was on and captured
    assert len(out["dbt.log"]) > 100_000
    # the scanner does find a value that is there, in any letter case, masked in its report
    phone = next(iter(pii["phone"]))
    name = max(pii["name"], key=len)
    planted = {"planted": f"x {phone} y {name.upper()} z"}
    leaks = find_leaks(planted, pii)
    assert ("planted", "phone", phone[:2] + "***" + phone[-2:]) in leaks
    assert any(kind == "name" for _, kind, _ in leaks)
    assert not any(phone in masked for _, _, masked in leaks)


def test_no_raw_identifier_in_output_logs_or_matcher_tables(corpus):
    out, _, pii = corpus
    leaks = find_leaks(out, pii)
    assert not leaks, f"{len(leaks)} leaks, first ones: {leaks[:20]}"


def test_evidence_holds_levels_and_scores_only(corpus, cfg):
    _, tables, _ = corpus
    from matcher.config import LEVELS

    allowed_keys = {"rule", "score", "name_similarity", *LEVELS}
    words = {level for levels in LEVELS.values() for level in levels} | {r.name for r in cfg.rules} | {
        "force_link", "singleton_driver", "singleton_lead"}
    evidence = tables["evidence"]
    assert {k for k, _, _ in evidence} <= allowed_keys
    assert {t for _, t, _ in evidence} <= {"string", "number", "null"}
    assert {v for _, t, v in evidence if t == "string"} <= words


def test_a_number_inside_a_64_bit_hash_is_not_a_leak_but_anywhere_else_is():
    # (a red_lead_claims row whose claims hash held a document of the demo data, 2026-12-06)
    assert not _found("20768137", "(-1402076813739232920,,d00000133)")
    assert _found("20768137", "(-1402076813739232920,20768137,d00000133)")
    assert _found("20768137", "doc=20768137")
    assert _found("20768137", "+5120768137")       # a few digits around it: still a leak
    assert _found("ana quispe", "x ana quispe y")
