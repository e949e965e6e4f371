"""End to end on a real Postgres: demo data -> dbt build -> matcher run -> links and origins."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT, env_for, subprocess_env, throwaway_database

from matcher.cli import cli

pytestmark = pytest.mark.slow

LEADS = 2500
PRECISION_FLOOR = 0.98
RECALL_FLOOR = 0.93

TABLES = ("identity_registry", "identity_links", "identity_origin", "match_attempts", "recovery_queue",
          "identity_origin_history", "match_conflicts")


class PipelineDb:
    """A database plus what the pipeline printed on it."""

    def __init__(self, db, output: str):
        self.db, self.pipeline_output = db, output

    def __getattr__(self, name):
        return getattr(self.db, name)


@pytest.fixture(scope="module")
def pipeline_db(server, dbt_target):
    """A database on which the whole demo pipeline ran once."""
    with throwaway_database(server, "matcher_e2e") as db:
        result = CliRunner().invoke(
            cli, ["pipeline", "--demo", "--leads", str(LEADS), "--quiet-dbt"], env=env_for(db, dbt_target)
        )
        assert result.exit_code == 0, result.output + repr(result.exception)
        yield PipelineDb(db, result.output)


@pytest.fixture
def pconn(pipeline_db):
    with pipeline_db.connect(autocommit=True) as c:
        yield c


def test_summary_printed_with_quality(pipeline_db):
    out = pipeline_db.pipeline_output
    assert "Identity summary" in out
    assert "precision" in out and "recall" in out
    print(out)


def test_every_usable_record_is_linked_or_has_fail_reason(pconn):
    orphans = pconn.execute(
        """
        select count(*) from intermediate.int_identity__records r
        where not exists (select 1 from canon.identity_links l where l.record_uid = r.record_uid)
          and not exists (select 1 from canon.match_attempts a
                          where (a.source_table, a.source_pk) = (r.source_table, r.source_pk)
                            and a.outcome = 'failed' and a.fail_reason is not null)
        """
    ).fetchone()[0]
    assert orphans == 0
    linked = pconn.execute("select count(*) from canon.identity_links").fetchone()[0]
    assert linked > LEADS  # most leads and drivers end up linked


def test_every_person_has_exactly_one_origin(pconn):
    persons, with_origin, orphans = pconn.execute(
        """
        select count(*), count(o.person_key),
               count(*) filter (where not exists (select 1 from canon.identity_links l where l.person_key = r.person_key))
        from canon.identity_registry r left join canon.identity_origin o using (person_key)
        """
    ).fetchone()
    assert persons > 0
    assert with_origin == persons
    assert orphans == 0  # no person without links


def test_origin_is_earliest_lead_or_driver_direct(pconn):
    wrong = pconn.execute(
        """
        with firsts as (
            select distinct on (person_key) person_key, source_table, source_pk
            from canon.identity_links
            order by person_key, (source_table = 'drivers'), source_event_at nulls last,
                     array_position(array['cabinet_leads','scout_registrations','fleet_migrations','drivers'], source_table),
                     source_pk
        )
        select count(*) from firsts f join canon.identity_origin o using (person_key)
        where (o.origin_source_table, o.origin_source_pk) <> (f.source_table, f.source_pk)
           or (o.origin_tag = 'driver_direct') <> (f.source_table = 'drivers')
        """
    ).fetchone()[0]
    assert wrong == 0


def test_no_source_record_has_two_links(pconn):
    dupes = pconn.execute(
        "select count(*) from (select source_table, source_pk from canon.identity_links group by 1, 2 having count(*) > 1) d"
    ).fetchone()[0]
    assert dupes == 0


def test_fail_reasons_are_from_the_spec(pconn):
    reasons = {r[0] for r in pconn.execute("select distinct fail_reason from canon.match_attempts where fail_reason is not null")}
    assert reasons <= {"missing_identifiers", "no_candidates", "below_threshold", "conflict", "shared_identifier"}
    assert "missing_identifiers" in reasons  # the demo has records with no identifiers at all


def test_evidence_has_no_raw_pii(pconn):
    sample = pconn.execute(
        """
        select l.evidence::text, r.phone, r.document_number, r.email, r.full_name
        from canon.identity_links l join intermediate.int_identity__records r using (record_uid)
        limit 500
        """
    ).fetchall()
    assert sample
    for evidence, *values in sample:
        keys = set(json.loads(evidence))
        assert {"rule", "phone", "document", "name"} <= keys
        for v in values:
            if v and len(v) >= 5:
                assert v not in evidence


def test_quality_above_floor(pipeline_db):
    result = CliRunner().invoke(cli, ["evaluate", "--json"], env=env_for(pipeline_db.db, ROOT / ".matcher" / "unused"))
    assert result.exit_code == 0, result.output
    q = json.loads(result.output)
    print(f"precision={q['precision']:.4f} recall={q['recall']:.4f} f1={q['f1']:.4f} blocking_recall={q['blocking_recall']}")
    assert q["precision"] >= PRECISION_FLOOR
    assert q["recall"] >= RECALL_FLOOR
    assert q["blocking_recall"] >= q["recall"]
    assert q["blocking_recall_comparable"] >= q["blocking_recall"]


def test_every_person_has_the_origin_its_links_give(pconn):
    """Origins of new persons are worked out from the run's own rows, the others from their
    links: either way each linked person has one, and it is the one the rule gives by links."""
    from matcher import config as config_mod
    from matcher import origins

    without = pconn.execute("select count(distinct l.person_key) from canon.identity_links l"
                            " where not exists (select 1 from canon.identity_origin o where o.person_key = l.person_key)"
                            ).fetchone()[0]
    assert without == 0
    tags = dict(pconn.execute("select origin_tag, count(*) from canon.identity_origin group by 1").fetchall())
    assert {"cabinet_lead", "driver_direct"} <= set(tags), tags
    assert origins.inconsistent(pconn, config_mod.load(project=ROOT)) == []


def test_the_run_counts_the_records_it_left_pending(pconn):
    """The pending count a run keeps (counted on a connection of its own while the run refreshes
    the red-KPI state) is the number of records without a link after its writes."""
    kept, runs = pconn.execute("select pending, count(*) over () from canon.match_runs where command = 'run'"
                               " and status = 'succeeded' order by run_id desc limit 1").fetchone()
    now = pconn.execute("select count(*) from identity.identity_pending_records").fetchone()[0]
    unlinked = pconn.execute("select count(*) from identity.identity_records r where not exists"
                             " (select 1 from canon.identity_links l where l.record_uid = r.record_uid)").fetchone()[0]
    assert runs >= 1 and kept == now == unlinked > 0


def test_every_link_carries_the_confidence_of_its_rule(pconn):
    from matcher import config as config_mod

    expected = {rule.name: rule.confidence for rule in config_mod.load(project=ROOT).rules}
    expected |= {"force_link": "high", "singleton_driver": "high", "singleton_lead": "high"}
    found = pconn.execute("select match_rule, confidence, count(*) from canon.identity_links group by 1, 2").fetchall()
    assert len({rule for rule, _, _ in found}) >= 3
    assert all(confidence == expected[rule] for rule, confidence, _ in found), found


def test_record_attributes_read_alike_through_an_array_a_table_and_every_live_record(pipeline_db, pconn, monkeypatch):
    """A run reads its records' attributes by an array parameter up to RECORD_ARRAY_MAX records;
    above it, every live record when the planner counts at most twice as many as those asked for
    (a first run), else through a temporary table of their ids. All three give the same records,
    values and persons and leave out a record that is gone; the second gives the other live
    records too."""
    import numpy as np

    from matcher import config as config_mod
    from matcher import runner
    from matcher.config import FIELDS

    involved = sorted({u for (u,) in pconn.execute(
        "select left_uid from identity.identity_candidates union select right_uid from identity.identity_candidates")})
    # every other one, so that live records are left out, and record 1, which does not exist
    uids = np.array(sorted(set(involved[::2]) | {1}), dtype=np.int64)
    live = sorted(u for (u,) in pconn.execute("select record_uid from identity.identity_records"))
    linked = pconn.execute("select count(*) from canon.identity_links where record_uid = any(%s)",
                           (uids.tolist(),)).fetchone()[0]
    run = runner.Run(pipeline_db.db, config_mod.load(project=ROOT))
    assert run._live_records_estimate(pconn) > 0
    read = {}
    for way, bound, estimate in (("array", len(uids), None), ("table", len(uids) - 1, 2 * len(uids) + 1),
                                 ("every live record", len(uids) - 1, 2 * len(uids))):
        monkeypatch.setattr(runner, "RECORD_ARRAY_MAX", bound)
        if estimate is not None:
            monkeypatch.setattr(run, "_live_records_estimate", lambda conn, n=estimate: n)
        rec_uid, rec_freq, rec_person, values, codes = run._read_records(pconn, uids)
        if way == "every live record":
            assert rec_uid.tolist() == live
            asked = np.isin(rec_uid, uids)
            rec_uid, rec_freq, rec_person = rec_uid[asked], rec_freq[asked], rec_person[asked]
            codes = {f: c[asked] for f, c in codes.items()}
        read[way] = (rec_uid.tolist(), rec_freq.tolist(), rec_person.tolist(),
                     {f: values[f].strings[codes[f]].tolist() for f in FIELDS})
    assert read["array"] == read["table"] == read["every live record"]
    rec_uid, rec_freq, rec_person, fields = read["array"]
    assert rec_uid == sorted(rec_uid) and 1 not in rec_uid and len(rec_uid) == len(uids) - 1 < len(live)
    assert sum(p is not None for p in rec_person) == linked > 0
    assert any(fields["phone"]) and any(fields["name"]) and max(rec_freq) > 1


def test_blocking_recall_counts_match_an_independent_count(pipeline_db, pconn):
    """Blocked and comparable true pairs, recounted in Python from the labels, the records and
    the candidate table (the demo has empty records: their pairs are true but not comparable)."""
    from collections import Counter

    from matcher.evaluate import UID_SQL, evaluate

    labels = dict(pconn.execute(f"select {UID_SQL}, true_entity_id from raw.ground_truth").fetchall())
    comparable = {
        uid for (uid,) in pconn.execute(
            "select record_uid from identity.identity_records"
            " where coalesce(phone, document_number, email, plate, full_name, claim_driver_id) is not null"
        )
    }
    per_entity = Counter(labels[uid] for uid in comparable if uid in labels)
    comparable_pairs = sum(n * (n - 1) // 2 for n in per_entity.values())
    blocked = sum(
        1 for left, right in pconn.execute("select left_uid, right_uid from identity.identity_candidates")
        if left in labels and right in labels and labels[left] == labels[right]
    )
    all_pairs = sum(n * (n - 1) // 2 for n in Counter(labels.values()).values())
    q = evaluate(pconn, labels="raw.ground_truth")
    assert (q.blocked_true_pairs, q.comparable_true_pairs, q.true_pairs) == (blocked, comparable_pairs, all_pairs)
    assert comparable_pairs < all_pairs  # the demo's empty records are there: the two figures differ
    assert sum(row["blocked_true_pairs"] for row in q.by_source_pair) == blocked


def test_candidate_pairs_are_every_pair_of_each_block_within_its_bound(pipeline_db, pconn):
    """The full build's pairs, recomputed in Python from the kept blocking keys: every two records
    of a block no larger than its type's bound, through a one-deletion key only where the name
    signatures allow it (macros/blocking_keys.sql fuzzy_names_compatible), with the mask of every
    key type that pairs them."""
    from collections import defaultdict

    import yaml

    from matcher.explain import BLOCKING_KEY_TYPES

    settings = yaml.safe_load((ROOT / "dbt_project.yml").read_text())["vars"]
    code = {name: i + 1 for i, name in enumerate(BLOCKING_KEY_TYPES)}
    bound = defaultdict(lambda: settings["max_block_size"], {
        code["name_pair"]: settings["max_name_block_size"],
        code["name_triple"]: settings["max_name_triple_block_size"],
    })
    fuzzy = {code["phone_fuzzy"], code["document_fuzzy"], code["plate_fuzzy"]}
    names = (1 << 52) - 1

    def names_agree(left: int | None, right: int | None) -> bool:
        left, right = left or 0, right or 0
        return (left ^ right) >> 52 != 0 and (left & names == 0 or right & names == 0 or left & right & names != 0)

    blocks = defaultdict(list)
    for key_hash, key_type, uid, signature in pconn.execute(
            "select key_hash, key_type, record_uid, name_signature from intermediate.int_identity__blocking_keys"):
        # the full build reads a block's type from its hash (blocking_key_hash): the low 4 bits
        assert key_hash & 15 == key_type, (key_hash, key_type)
        blocks[key_hash].append((uid, key_type, signature))
    expected: dict[tuple[int, int], int] = defaultdict(int)
    for members in blocks.values():
        key_type = min(t for _, t, _ in members)
        if not 1 < len(members) <= bound[key_type]:
            continue
        members.sort()
        for a, (left, _, left_signature) in enumerate(members):
            for right, _, right_signature in members[a + 1:]:
                if left < right and (key_type not in fuzzy or names_agree(left_signature, right_signature)):
                    expected[left, right] |= 1 << (key_type - 1)
    built = {(left, right): mask for left, right, mask in pconn.execute(
        "select left_uid, right_uid, blocking_mask from identity.identity_candidates")}
    assert len(built) > 1000
    assert built == dict(expected)


def _compile_inline(pipeline_db, dbt_target, inline: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matcher", "dbt", "compile", "--inline", inline, "--quiet",
                           "--output", "json"], env=subprocess_env(pipeline_db.db, dbt_target), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_block_pair_positions_are_the_same_rows_both_ways(pipeline_db, dbt_target, pconn):
    """block_pair_positions makes its rows from one series over a grid up to a bound of 200 and
    from nested series above it: both give every 1 <= i < j <= n exactly once."""
    inline = "{{ block_pair_positions(200) }}\n--@@split@@\n{{ block_pair_positions(201) }}"
    proc = _compile_inline(pipeline_db, dbt_target, inline)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    grid, nested = json.loads(proc.stdout[proc.stdout.index("{"):])["compiled"].split("--@@split@@")
    assert "generate_series(0, 7999999)" in grid and "lateral" in nested
    for query, size in ((grid, 200), (nested, 201)):
        rows = pconn.execute(f"select count(*), count(distinct (n, i, j)), min(n), max(n),"
                             f" bool_and(1 <= i and i < j and j <= n) from ({query}) as p").fetchone()
        assert rows == (sum(n * (n - 1) // 2 for n in range(2, size + 1)),) * 2 + (2, size, True)
    common = f"select n, i, j from ({grid}) as g except all select n, i, j from ({nested}) as s where n <= 200"
    assert pconn.execute(f"select count(*) from ({common}) as d").fetchone()[0] == 0


def test_name_keys_are_the_first_tokens_and_their_signature(pipeline_db, dbt_target, pconn):
    """name_keys (macros/blocking_keys.sql) gives a name's blocking tokens (no particles, no
    initials, byte order, a repeated token kept, the first max_name_key_tokens) and their
    signature (a bit per distinct token) in one pass: recomputed here from the names, for
    made-up names that reach every case and for every record the pipeline keyed."""
    import yaml

    settings = yaml.safe_load((ROOT / "dbt_project.yml").read_text())["vars"]
    limit, particles = settings.get("max_name_key_tokens", 8), {"de", "del", "la", "las", "los", "y", "da", "das",
                                                                  "do", "dos", "van", "von", "di"}

    def expected(name: str | None) -> list[str]:
        tokens = [t for t in (name or "").split(" ") if len(t) > 1 and t not in particles]
        return sorted(tokens, key=lambda t: t.encode())[:limit]

    def signature(tokens: list[str]) -> int | None:
        if not tokens:
            return None
        bits = 0
        for (h,) in pconn.execute("select hashtextextended(t, 0) from unnest(%s::text[]) as t", (tokens,)):
            bits |= 1 << ((h & 2147483647) % 52)
        return bits - (1 << 64) if bits >= 1 << 63 else bits

    made_up = ["de la cruz garcia garcia j maria", "a b c", "", None, "zoe ana zoe ana del rio",
               " ".join(f"tok{i:02d}" for i in range(12, 0, -1)), "y", "luis de los santos"]
    proc = _compile_inline(pipeline_db, dbt_target, "{{ name_keys('n') }}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    select = json.loads(proc.stdout[proc.stdout.index("{"):])["compiled"].replace("%", "%%")
    rows = pconn.execute(f"select n, k.name_tokens, k.name_signature from unnest(%s::text[]) with ordinality as u (n, i)"
                         f" cross join lateral ({select}) as k order by i", (made_up,)).fetchall()
    assert [(tokens, sig) for _, tokens, sig in rows] == [(expected(n), signature(expected(n))) for n in made_up]
    assert len(rows[5][1]) == limit  # a long name is cut at the bound
    stored = pconn.execute("select name_sorted, name_tokens, name_signature"
                           " from intermediate.int_identity__records_usable").fetchall()
    assert len(stored) > 1000
    assert all(tokens == expected(name) for name, tokens, _ in stored)
    named = [(tokens, sig) for _, tokens, sig in stored if tokens][:300]
    assert len(named) == 300 and all(sig == signature(tokens) for tokens, sig in named)


def test_key_hash_ranges_put_every_bigint_in_exactly_one(pipeline_db, dbt_target, pconn):
    """identity_candidates' full build reads the blocks of each key-hash range in its own branch:
    a hash in no range loses its block's pairs, a hash in two doubles them. Every range's
    conditions are evaluated on the ends of the bigint range and on each boundary and its
    neighbours."""
    counts = (1, 2, 3, 7)
    inline = "\n--@@split@@\n".join(f"{{{{ key_hash_ranges('h', {n}) | join('\n--@@range@@\n') }}}}"
                                     for n in counts)
    proc = _compile_inline(pipeline_db, dbt_target, inline)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    compiled = json.loads(proc.stdout[proc.stdout.index("{"):])["compiled"].split("--@@split@@")
    low, high = -(1 << 63), (1 << 63) - 1
    for n, text in zip(counts, compiled):
        conditions = [c.strip() for c in text.split("--@@range@@")]
        assert len(conditions) == n
        boundaries = [low + ((1 << 64) * k) // n for k in range(1, n)]
        probes = sorted({low, low + 1, -1, 0, 1, high - 1, high}
                        | {b + d for b in boundaries for d in (-1, 0, 1)})
        hits = " + ".join(f"({c})::int" for c in conditions)
        rows = pconn.execute(f"select h, {hits} from unnest(%s::bigint[]) as t (h)", (probes,)).fetchall()
        assert [h for h, hit in rows if hit != 1] == [], (n, conditions)
        # the ranges are about equal: the blocks split evenly between the processes
        assert all(abs((b - a) - (1 << 64) // n) <= 1 for a, b in zip([low, *boundaries], [*boundaries, high + 1]))
    bad = _compile_inline(pipeline_db, dbt_target, "{{ key_hash_ranges('h', 0) }}")
    assert bad.returncode != 0 and "candidates_full_build_ranges is '0'" in bad.stdout + bad.stderr


def test_candidates_built_by_create_table_as_keep_their_contract(pconn):
    """The contracted candidate table is made by create-table-as (macros/materializations/
    create_table_as.sql), its select running in parallel, and given its contract's constraints
    afterwards: every column not null, the pair in order."""
    import psycopg

    not_null = dict(pconn.execute(
        "select attname, attnotnull from pg_attribute"
        " where attrelid = 'identity.identity_candidates'::regclass and attnum > 0 and not attisdropped").fetchall())
    assert not_null == {"left_uid": True, "right_uid": True, "blocking_mask": True}
    checks = [d for (d,) in pconn.execute(
        "select pg_get_constraintdef(oid) from pg_constraint"
        " where conrelid = 'identity.identity_candidates'::regclass and contype = 'c'")]
    assert checks == ["CHECK ((left_uid < right_uid))"]
    with pytest.raises(psycopg.errors.CheckViolation):
        pconn.execute("insert into identity.identity_candidates values (5, 3, 1)")
    with pytest.raises(psycopg.errors.NotNullViolation):
        pconn.execute("insert into identity.identity_candidates values (3, 5, null)")


def test_link_precision_by_rule_matches_an_independent_count(pipeline_db, pconn):
    """Per rule: links, and links whose record belongs to its person's modal true entity (ties
    to the smallest entity id), recounted in Python from the labels and the links."""
    from collections import Counter, defaultdict

    from matcher.evaluate import evaluate

    truth = {(t, k): e for t, k, e in pconn.execute("select source_table, source_pk, true_entity_id from raw.ground_truth")}
    links = [(t, k, str(p), rule) for t, k, p, rule in pconn.execute(
        "select source_table, source_pk, person_key, match_rule from canon.identity_links") if (t, k) in truth]
    entities: dict[str, Counter] = defaultdict(Counter)
    for t, k, person, _ in links:
        entities[person][truth[t, k]] += 1
    modal = {person: min(c, key=lambda e: (-c[e], e)) for person, c in entities.items()}
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for t, k, person, rule in links:
        expected[rule][0] += 1
        expected[rule][1] += truth[t, k] == modal[person]
    q = evaluate(pconn, labels="raw.ground_truth", with_blocking=False)
    assert {row["rule"]: [row["links"], row["correct"]] for row in q.by_rule} == dict(expected)
    assert len(expected) > 3


def _write_counters(conn) -> dict[str, tuple[int, int, int]]:
    conn.execute("select pg_stat_clear_snapshot()")
    rows = conn.execute(
        "select relname, n_tup_ins, n_tup_upd, n_tup_del from pg_stat_user_tables"
        " where schemaname = 'canon' and relname = any(%s)",
        (list(TABLES),),
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_second_run_on_unchanged_input_writes_zero_rows(pipeline_db, dbt_target):
    env = env_for(pipeline_db.db, dbt_target)
    # rebuild candidates from the now-linked state, as the scheduled job would
    assert CliRunner().invoke(cli, ["dbt", "build", "--quiet"], env=env).exit_code == 0
    with pipeline_db.connect(autocommit=True) as c:
        before = _write_counters(c)
    result = CliRunner().invoke(cli, ["run", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows_written"] == 0
    with pipeline_db.connect(autocommit=True) as c:
        # the run's backends have exited, so their counters are flushed
        after = _write_counters(c)
    assert before and after == before


def test_dbt_docs_generate(pipeline_db, dbt_target):
    result = CliRunner().invoke(cli, ["dbt", "docs", "generate", "--quiet"], env=env_for(pipeline_db.db, dbt_target))
    assert result.exit_code == 0, result.output
    assert (dbt_target / "catalog.json").exists()
    catalog = json.loads((dbt_target / "catalog.json").read_text())
    assert any(k.endswith("identity_candidates") for k in catalog["nodes"])


VIEWS = {"stg_canon__identity_links": "staging", "ops_matcher_health": "ops", "ops_kpi_red_backlog": "ops"}


def _dbt_views(pipeline_db, dbt_target, *extra: str) -> dict[str, tuple[str, int | None]]:
    """`dbt run` of VIEWS: each view's result message and its relation's oid afterwards."""
    env = env_for(pipeline_db.db, dbt_target)
    result = CliRunner().invoke(cli, ["dbt", "run", "--quiet", "--select", *VIEWS, *extra], env=env)
    assert result.exit_code == 0, result.output
    messages = {r["unique_id"].rsplit(".", 1)[-1]: r["message"]
                for r in json.loads((dbt_target / "run_results.json").read_text())["results"]}
    with pipeline_db.connect(autocommit=True) as c:
        return {view: (messages[view], c.execute("select to_regclass(%s)::oid", (f"{schema}.{view}",)).fetchone()[0])
                for view, schema in VIEWS.items()}


def test_views_are_rebuilt_only_when_what_they_are_made_of_changed(pipeline_db, dbt_target):
    """An hourly run leaves its views alone (no DDL, no lock on what dashboards read) unless the
    view is gone, its compiled SQL changed (here a var it reads) or the run is a full refresh."""
    first = _dbt_views(pipeline_db, dbt_target)
    again = _dbt_views(pipeline_db, dbt_target)
    assert all(message == "UNCHANGED" for message, _ in again.values()), again
    assert {v: oid for v, (_, oid) in again.items()} == {v: oid for v, (_, oid) in first.items()}

    # dropped underneath (as `drop ... cascade` of something it reads would): built again
    with pipeline_db.connect(autocommit=True) as c:
        c.execute("drop view ops.ops_kpi_red_backlog")
    rebuilt = _dbt_views(pipeline_db, dbt_target)
    assert rebuilt["ops_kpi_red_backlog"][0].startswith("CREATE VIEW") and rebuilt["ops_kpi_red_backlog"][1]
    assert rebuilt["ops_matcher_health"] == again["ops_matcher_health"]

    # a var the view's SQL reads changed: that view only, then back again
    def definition() -> str:
        with pipeline_db.connect(autocommit=True) as c:
            return c.execute("select pg_get_viewdef('ops.ops_matcher_health'::regclass)").fetchone()[0]

    before = definition()
    changed = _dbt_views(pipeline_db, dbt_target, "--vars", "{health_backlog_rate_days: 3}")
    assert changed["ops_matcher_health"][0].startswith("CREATE VIEW")
    assert changed["ops_matcher_health"][1] != again["ops_matcher_health"][1] and definition() != before
    assert changed["stg_canon__identity_links"] == again["stg_canon__identity_links"]
    assert _dbt_views(pipeline_db, dbt_target)["ops_matcher_health"][0].startswith("CREATE VIEW")
    assert definition() == before

    # a full refresh builds every view
    refreshed = _dbt_views(pipeline_db, dbt_target, "--full-refresh")
    assert all(message.startswith("CREATE VIEW") for message, _ in refreshed.values()), refreshed


def test_unreachable_database_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "matcher", "run"],
        env={**subprocess_env_base(), "MATCHER_DATABASE_URL": "host=127.0.0.1 port=1 user=nobody dbname=none"},
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 4
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to Postgres")
    assert "Traceback" not in proc.stderr


def test_missing_raw_tables_is_one_clear_line(fresh_database, dbt_target):
    proc = subprocess.run(
        [sys.executable, "-m", "matcher", "pipeline"],
        env=subprocess_env(fresh_database, dbt_target), capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 5, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "raw tables missing" in errors[0]
    # nothing but the matcher's own (empty) tables was created
    with fresh_database.connect(autocommit=True) as c:
        assert c.execute("select count(*) from canon.identity_links").fetchone()[0] == 0


def subprocess_env_base() -> dict[str, str]:
    import os

    from matcher.db import LIBPQ_VARS

    return {k: v for k, v in os.environ.items() if k not in LIBPQ_VARS and k != "MATCHER_DATABASE_URL"}


def test_record_uid_macro_and_matcher_agree(pconn):
    from matcher.runner import RECORD_UID_SQL

    expr = RECORD_UID_SQL.format(t="r.source_table", k="r.source_pk")
    mismatched = pconn.execute(
        f"select count(*) from intermediate.int_identity__records r where r.record_uid <> {expr}"
    ).fetchone()[0]
    assert mismatched == 0


def test_explain_shows_masked_identifiers_candidates_and_outcome(pipeline_db, pconn):
    uid, table, pk, phone, doc, name = pconn.execute(
        "select r.record_uid, r.source_table, r.source_pk, r.phone, r.document_number, r.full_name"
        " from intermediate.int_identity__records r join canon.identity_links l using (record_uid)"
        " where r.phone is not null and r.document_number is not null and l.match_rule = 'document_exact_name'"
        " order by r.source_pk limit 1").fetchone()
    result = CliRunner().invoke(cli, ["explain", table, pk, "--json"], env=env_for(pipeline_db.db, ROOT / ".matcher" / "unused"))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["link"]["match_rule"] == "document_exact_name"
    assert data["origin"] is not None
    for c in data["candidates"]:  # after a re-build, a linked record keeps only pairs with pending records
        assert set(c["levels"]) == {"phone", "document", "email", "plate", "claim", "name"}
        assert c["rule"] is None or isinstance(c["score"], float)
    for raw_value in (phone, doc, name):
        assert raw_value not in result.output
    assert data["record"]["identifiers"]["phone"] == phone[:2] + "*" * 5 + phone[-2:]
    missing = CliRunner().invoke(cli, ["explain", "drivers", "NO-SUCH-KEY"], env=env_for(pipeline_db.db, ROOT / ".matcher" / "unused"))
    assert missing.exit_code == 1 and "no record drivers/NO-SUCH-KEY" in missing.output


def test_embedded_server_runs_with_its_settings(pconn):
    from matcher import db

    if db.uses_external_server():
        pytest.skip("a server of your own keeps its own settings")
    for name, value in db.EMBEDDED_SETTINGS.items():
        assert pconn.execute("select current_setting(%s)", (name,)).fetchone()[0] == value
    # read only at start: the server was restarted into them (wal_level=minimal: bulk builds skip the WAL)
    for name, value in db.EMBEDDED_RESTART_SETTINGS.items():
        assert pconn.execute("select setting from pg_settings where name = %s", (name,)).fetchone()[0] == value


def test_a_run_that_wrote_much_analyzes_what_it_wrote(pconn):
    """The first run fills tables that were never analyzed, and analyzes them itself before
    deriving the red-KPI state from them (autovacuum may not have yet)."""
    from matcher.runner import WRITTEN_TABLES

    pconn.execute("select pg_stat_clear_snapshot()")
    analyzed = {name for (name,) in pconn.execute(
        "select relname from pg_stat_user_tables where schemaname = 'canon' and last_analyze is not null")}
    assert set(WRITTEN_TABLES) <= analyzed


def test_dbt_through_the_matcher_upgrades_the_matcher_tables_first(fresh_database, dbt_target, monkeypatch):
    """The ops views read the canon tables (dbt sources): `matcher dbt ...` applies the
    matcher's pending migrations before dbt runs, so an upgrade's new tables exist for it."""
    from matcher import migrate as migrate_mod

    every = migrate_mod.available()
    with fresh_database.connect(autocommit=True) as c:
        with monkeypatch.context() as mp:   # an install one version behind
            mp.setattr(migrate_mod, "available", lambda: every[:-1])
            migrate_mod.migrate(c, "canon")
        newest = f"{every[-1][0]:04d}_{every[-1][1]}"
        assert migrate_mod.pending(c, "canon") == [newest]
    proc = subprocess.run(
        [sys.executable, "-m", "matcher", "dbt", "run", "--quiet", "--select", "stg_canon__identity_links"],
        env=subprocess_env(fresh_database, dbt_target), capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with fresh_database.connect(autocommit=True) as c:
        assert migrate_mod.pending(c, "canon") == []
