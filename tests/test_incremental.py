"""Incremental identity models: a run on changed raw data must leave the same tables a full
rebuild would (candidate pairs: a superset, see identity_candidates' header), and a run on
unchanged data must change nothing."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from psycopg import sql
from conftest import ROOT, subprocess_env, throwaway_database

from matcher import demo
from matcher.migrate import migrate

pytestmark = pytest.mark.slow

# table -> (columns compared, filter): load ids and rewrite bookkeeping differ by design
COMPARED = {
    "intermediate.int_identity__records": (
        "record_uid, source_table, source_pk, record_kind, origin_tag, event_at, phone, phone_invalid_reason,"
        " document_number, email, plate, full_name, name_sorted, claim_driver_id, fingerprint, raw_hash",
        "not is_deleted",
    ),
    "intermediate.int_identity__shared_identifiers": ("identifier_type, identifier_value, record_count", "is_shared"),
    "intermediate.int_identity__records_usable": (
        "record_uid, source_table, source_pk, record_kind, origin_tag, event_at, fingerprint, phone,"
        " document_number, email, plate, full_name, name_sorted, claim_driver_id, has_shared_identifier",
        "not is_deleted",
    ),
    "intermediate.int_identity__name_frequency": ("name_sorted, name_frequency", "name_frequency > 0"),
    "intermediate.int_identity__blocking_keys": ("record_uid, key_type, key_hash", "true"),
}


@contextmanager
def demo_database(server, prefix: str, leads: int, seed: int):
    """A throwaway database with the matcher's tables and demo raw data."""
    with throwaway_database(server, prefix) as db:
        with db.connect(autocommit=True) as c:
            migrate(c, "canon")
            demo.create_raw_schema(c, "raw")
            demo.generate(c, demo.DemoSpec(leads=leads, seed=seed), "raw")
        yield db


def matcher(env, *args):
    proc = subprocess.run([sys.executable, "-m", "matcher", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def snapshot(c, schema: str) -> None:
    """Copy the compared columns of every table into `schema` (t0, t1, ..., candidates)."""
    c.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))
    c.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
    for i, (table, (columns, where)) in enumerate(COMPARED.items()):
        c.execute(sql.SQL("create table {} as select {} from {} where {}").format(
            sql.Identifier(schema, f"t{i}"), sql.SQL(columns), sql.Identifier(*table.split(".")), sql.SQL(where)))
    c.execute(sql.SQL("create table {} as select left_uid, right_uid, blocking_mask from identity.identity_candidates")
              .format(sql.Identifier(schema, "candidates")))


def differences(c, a: str, b: str, table: str) -> int:
    """Rows in one snapshot's table and not in the other's, both ways (multiset)."""
    ta, tb = sql.Identifier(a, table), sql.Identifier(b, table)
    return c.execute(
        sql.SQL("select count(*) from ((table {a} except all table {b}) union all (table {b} except all table {a})) d")
        .format(a=ta, b=tb)
    ).fetchone()[0]


def assert_as_rebuilt(c, kept: str, rebuilt: str, what: str) -> None:
    """Each compared table of snapshot `kept` equals the full rebuild's, and no pair of the rebuild
    is missing from it (the pairs may be a superset of the rebuild's: identity_candidates' header)."""
    for i, table in enumerate(COMPARED):
        assert differences(c, kept, rebuilt, f"t{i}") == 0, f"{table}: {what} differs from a full rebuild"
    missing = c.execute(sql.SQL("select count(*) from (table {} except table {}) d").format(
        sql.Identifier(rebuilt, "candidates"), sql.Identifier(kept, "candidates"))).fetchone()[0]
    assert missing == 0, f"a pair of the full rebuild is missing after {what}"


def mutate(c) -> dict[str, int]:
    """Every kind of change a source sees: new rows, edited rows, deleted rows, a value becoming
    shared and a shared value ceasing to be."""
    edited = c.execute(
        "update raw.cabinet_leads set phone = '9' || lpad((abs(hashtext(lead_id)) % 100000000)::text, 8, '0'),"
        " last_name = last_name || 'z' where lead_id in (select lead_id from raw.cabinet_leads order by lead_id limit 25)"
    ).rowcount
    deleted = c.execute(
        "delete from raw.scout_registrations where registration_id in"
        " (select registration_id from raw.scout_registrations order by registration_id limit 15)"
        " returning registration_id"
    ).fetchall()
    c.execute("delete from raw.ground_truth where source_table = 'scout_registrations' and source_pk = any(%s)",
              ([r[0] for r in deleted],))
    # eight drivers take one phone: it becomes shared, their other evidence stays usable
    c.execute("update raw.drivers set phone = '987000111'"
              " where driver_id in (select driver_id from raw.drivers order by driver_id limit 8)")
    # a value shared so far: all but two of its holders change it (it is not shared any more)
    c.execute(
        "with shared as (select phone from raw.fleet_migrations where phone is not null"
        "   group by phone order by count(*) desc limit 1)"
        " update raw.fleet_migrations set phone = null where migration_id in ("
        "   select migration_id from raw.fleet_migrations where phone = (select phone from shared)"
        "   order by migration_id offset 2)"
    )
    # a claim comes to name a lead loaded before, and a lead loses the only claim naming it
    named = c.execute(
        "insert into raw.claims (claim_id, driver_id, lead_id, milestone, amount, claimed_at, status)"
        " select 'CLM-T1', (select min(driver_id) from raw.drivers), l.lead_id, 1, 100, now(), 'paid'"
        " from raw.cabinet_leads l where not exists (select 1 from raw.claims c where c.lead_id = l.lead_id)"
        " order by l.lead_id desc limit 1 returning lead_id").fetchone()[0]
    unnamed = c.execute(
        # the lead's only claim of any status: a rejected claim beside it would not name it either,
        # but deleting it too would make this two rows (the demo's claims move with the hour)
        "delete from raw.claims where lead_id = (select lead_id from raw.claims where lead_id is not null"
        " and lead_id <> %s group by lead_id having count(*) = 1 and bool_and(status is distinct from 'rejected')"
        " order by lead_id limit 1) returning lead_id",
        (named,)).fetchall()
    added = demo.append_leads(c, 400, seed=7)
    return {"added": sum(added.values()), "edited": edited, "deleted": len(deleted), "named": named,
            "unnamed": [r[0] for r in unnamed]}


# int_identity__records writes the changed keys and the vanished records into its query when
# they are few, and anti-joins every raw row otherwise: both ways must give the same tables
@pytest.mark.parametrize("keys", ["inline", "anti_join"])
def test_incremental_run_equals_full_rebuild(server, dbt_target, keys):
    limit = ["--vars", "{incremental_inline_keys_limit: 10}"] if keys == "anti_join" else []
    with demo_database(server, "matcher_incr", leads=600, seed=11) as db:
        with db.connect(autocommit=True) as c:
            # a phone on 7 migrations, so that it is shared before the change above
            c.execute("update raw.fleet_migrations set phone = '987000222'"
                      " where migration_id in (select migration_id from raw.fleet_migrations order by migration_id limit 7)")
        env = subprocess_env(db, dbt_target)
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            assert c.execute("select count(*) from intermediate.int_identity__shared_identifiers"
                             " where identifier_value = '987000222' and is_shared").fetchone()[0] == 1
            before = c.execute("select count(*) from identity.identity_candidates").fetchone()[0]
            changes = mutate(c)
            # only the run itself may vacuum the keys (autovacuum would hide a missing vacuum)
            c.execute("alter table intermediate.int_identity__blocking_keys set (autovacuum_enabled = false)")
            keys_mark = c.execute("select max(load_id) from intermediate.int_identity__records_usable").fetchone()[0]
        assert changes["added"] > 0 and changes["edited"] == 25 and changes["deleted"] == 15
        assert len(changes["unnamed"]) == 1

        # one thread: no other model's transaction is open when the keys' vacuum runs (one that
        # is, keeps it from marking the newest pages: see vacuum_appended)
        matcher(env, "dbt", "run", "--quiet", "--threads", "1", *limit)
        with db.connect(autocommit=True) as c:
            # the pages the run appended keys to are all-visible: a block lookup reads the index alone
            c.execute("create extension if not exists pg_visibility")
            appended, hidden = c.execute(
                "select count(*), count(*) filter (where not v.all_visible)"
                " from intermediate.int_identity__blocking_keys k"
                " join pg_visibility_map('intermediate.int_identity__blocking_keys') v"
                "   on v.blkno = (k.ctid::text::point)[0]::bigint"
                " where k.record_uid in (select record_uid from intermediate.int_identity__records_usable"
                "   where load_id > %s)", (keys_mark,)).fetchone()
            assert appended > 0 and hidden == 0, (appended, hidden)
        compiled = next(dbt_target.glob("compiled/**/int_identity__records.sql")).read_text()
        assert ("15 records whose raw row is gone" in compiled) == (keys == "inline")
        with db.connect(autocommit=True) as c:
            snapshot(c, "incr")
            stats = c.execute(
                "select count(*) filter (where is_deleted), count(*) from intermediate.int_identity__records"
            ).fetchone()
            assert stats[0] == 15, "deleted raw rows become tombstones"
            flips = c.execute("select identifier_value, is_shared from intermediate.int_identity__shared_identifiers"
                              " where identifier_value in ('987000111', '987000222') order by 1").fetchall()
            assert flips == [("987000111", True), ("987000222", False)]
            # the claim changes reached the leads they name, and nothing else
            claimed = dict(c.execute(
                "select source_pk, claim_driver_id from intermediate.int_identity__records"
                " where source_pk = any(%s)", ([changes["named"], *changes["unnamed"]],)).fetchall())
            assert claimed[changes["named"]] is not None and claimed[changes["unnamed"][0]] is None, claimed

        # unchanged input: nothing is rewritten
        loads = ("select (select max(load_id) from intermediate.int_identity__records),"
                 " (select max(load_id) from intermediate.int_identity__records_usable),"
                 " (select count(*) from intermediate.int_identity__blocking_keys),"
                 " (select count(*) from identity.identity_candidates)")
        with db.connect(autocommit=True) as c:
            marks = c.execute(loads).fetchone()
        matcher(env, "dbt", "run", "--quiet", *limit)
        written = {r["unique_id"].rsplit(".", 1)[-1]: r["adapter_response"].get("rows_affected")
                   for r in json.loads((dbt_target / "run_results.json").read_text())["results"]
                   if r["unique_id"].startswith("model.")}
        incremental = [m for m in written if (m.startswith("int_identity__") or m == "identity_candidates")
                       and m != "int_identity__claim_attributions"]  # (a table built again every run)
        assert len(incremental) == 6 and all(written[m] == 0 for m in incremental), written
        with db.connect(autocommit=True) as c:
            assert c.execute(loads).fetchone() == marks
            snapshot(c, "again")
            for i in range(len(COMPARED)):
                assert differences(c, "incr", "again", f"t{i}") == 0
            assert differences(c, "incr", "again", "candidates") == 0

        matcher(env, "dbt", "run", "--quiet", "--full-refresh", "--threads", "1")
        with db.connect(autocommit=True) as c:
            # a full build vacuums its keys too: identity_candidates' full build walks their index
            # alone, with no heap page to read (it sorts them otherwise). Every page holding a key
            # is all-visible (the empty pages a bulk insert leaves at the end are not: no index
            # entry points to them)
            keys, hidden = c.execute(
                "select count(*), count(*) filter (where not v.all_visible)"
                " from intermediate.int_identity__blocking_keys k"
                " join pg_visibility_map('intermediate.int_identity__blocking_keys') v"
                "   on v.blkno = (k.ctid::text::point)[0]::bigint").fetchone()
            assert keys > 0 and hidden == 0, (keys, hidden)
            snapshot(c, "rebuilt")
            assert_as_rebuilt(c, "incr", "rebuilt", "the incremental run")
            total = c.execute("select count(*) from rebuilt.candidates").fetchone()[0]
            assert total > before
            # the pairs of deleted or changed records were taken out, not left to linger
            stale = c.execute(
                "select count(*) from incr.candidates c where not exists (select 1 from incr.t2 u where u.record_uid = c.left_uid)"
                " or not exists (select 1 from incr.t2 u where u.record_uid = c.right_uid)"
            ).fetchone()[0]
            assert stale == 0


def test_blocking_keys_a_crash_emptied_are_made_again_by_the_next_run(server, dbt_target):
    """The blocking keys are an unlogged table: crash recovery leaves it empty (what a truncate
    does here). The next incremental run keys every live record again, says so, and leaves the
    keys and pairs a full rebuild gives; the pairs, which are logged, are kept meanwhile."""
    with demo_database(server, "matcher_unlogged", leads=300, seed=9) as db:
        env = subprocess_env(db, dbt_target)
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            persistence = c.execute("select relpersistence from pg_class"
                                    " where oid = 'intermediate.int_identity__blocking_keys'::regclass").fetchone()[0]
            assert persistence == "u"
            keys_before = c.execute("select count(*) from intermediate.int_identity__blocking_keys").fetchone()[0]
            c.execute("truncate intermediate.int_identity__blocking_keys")
            added = sum(demo.append_leads(c, 40, seed=13).values())
        assert keys_before > 0 and added > 0
        healed = matcher(env, "dbt", "run")
        assert "every live record is keyed again" in healed.stdout
        with db.connect(autocommit=True) as c:
            snapshot(c, "healed")
            new_pairs = c.execute("select count(*) from identity.identity_candidates c"
                                  " join intermediate.int_identity__records_usable u on u.record_uid in (c.left_uid, c.right_uid)"
                                  " where u.load_id = (select max(load_id) from intermediate.int_identity__records_usable)"
                                  ).fetchone()[0]
            assert new_pairs > 0, "the new leads met the records keyed again"
        # the next run finds keys again: it keys only what is new
        quiet = matcher(env, "dbt", "run")
        assert "keyed again" not in quiet.stdout
        matcher(env, "dbt", "run", "--quiet", "--full-refresh")
        with db.connect(autocommit=True) as c:
            snapshot(c, "rebuilt")
            assert_as_rebuilt(c, "healed", "rebuilt", "the healed run")


def test_keys_of_rewritten_records_are_deleted_by_index_only_when_the_keys_are_current(server, dbt_target):
    """int_identity__records_usable deletes the old blocking keys of the records it rewrites, by
    index, before it replaces the rows they were made from, and notes its run (prune_blocking_keys):
    only when the kept keys were made from exactly its rows and the records are few. Otherwise the
    keys' own pre-hook finds them by reading the table. Every way leaves the keys and pairs a full
    rebuild makes: a run that looked up keys of rows already replaced would leave the old ones."""
    upstream = ["--select", "int_identity__claim_attributions", "int_identity__records",
                "int_identity__shared_identifiers", "int_identity__records_usable"]
    lookups = ["--vars", "{blocking_keys_lookup_pages_per_record: 0}"]  # however many are rewritten
    never = ["--vars", "{blocking_keys_lookup_pages_per_record: 1000000000}"]
    pruned_mark = ("select loaded_through from intermediate.identity_load_state"
                   " where model_name = 'int_identity__blocking_keys' and upstream_name = 'pruned by int_identity__records_usable'")
    newest = "select max(load_id) from intermediate.int_identity__records_usable"

    def edit(c, first: int, count: int, tag: str) -> None:
        # new e-mails (a key each) and no phone (nine one-deletion keys fewer)
        c.execute("update raw.drivers set email = %s || driver_id || '@mail.pe', phone = null"
                  " where driver_id in (select driver_id from raw.drivers order by driver_id offset %s limit %s)",
                  (tag, first, count))

    def as_rebuilt(c, env, name: str) -> None:
        snapshot(c, name)
        matcher(env, "dbt", "run", "--quiet", "--full-refresh")
        snapshot(c, name + "_rebuilt")
        assert_as_rebuilt(c, name, name + "_rebuilt", name)

    with demo_database(server, "matcher_prune", leads=300, seed=5) as db:
        env = subprocess_env(db, dbt_target)
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            assert c.execute(pruned_mark).fetchone() is None
            edit(c, 0, 20, "a")
        # the keys are current: the records' run deletes the old keys of drivers 0-19 itself
        matcher(env, "dbt", "run", "--quiet", *upstream, *lookups)
        with db.connect(autocommit=True) as c:
            first = c.execute(newest).fetchone()[0]
            assert c.execute(pruned_mark).fetchone()[0] == first
            gone = c.execute("select count(*) from intermediate.int_identity__blocking_keys k"
                             " join intermediate.int_identity__records_usable u using (record_uid)"
                             " where u.load_id = %s", (first,)).fetchone()[0]
            assert gone == 0, "the rewritten drivers' keys were deleted before the keys' own run"
            edit(c, 10, 20, "b")
        # the keys missed that run: drivers 10-29 are left to the keys' pre-hook
        matcher(env, "dbt", "run", "--quiet", *upstream, *lookups)
        with db.connect(autocommit=True) as c:
            assert c.execute(newest).fetchone()[0] > first
            assert c.execute(pruned_mark).fetchone()[0] == first
        matcher(env, "dbt", "run", "--quiet", *lookups)
        with db.connect(autocommit=True) as c:
            as_rebuilt(c, env, "behind")
            mark = c.execute(pruned_mark).fetchone()[0]
            edit(c, 40, 20, "c")
        # too many to look up: left to the keys' pre-hook, and the keys fall behind again
        matcher(env, "dbt", "run", "--quiet", *upstream, *never)
        with db.connect(autocommit=True) as c:
            assert c.execute(pruned_mark).fetchone()[0] == mark
            edit(c, 50, 20, "d")
        # drivers 50-59 were rewritten without a lookup: their kept keys are the ones before "c",
        # not those of the rows here now, so nothing is looked up
        matcher(env, "dbt", "run", "--quiet", *upstream, *lookups)
        with db.connect(autocommit=True) as c:
            assert c.execute(pruned_mark).fetchone()[0] == mark
        matcher(env, "dbt", "run", "--quiet", *lookups)
        with db.connect(autocommit=True) as c:
            as_rebuilt(c, env, "too_many")


def test_the_keys_vacuum_waits_for_older_transactions_so_their_pages_end_all_visible(server, dbt_target):
    """A vacuum cannot mark pages all-visible while a transaction older than their rows is open
    (autovacuum analyzing another table, a dashboard query), and identity_candidates then reads
    the keys' heap, or sorts them all in a full build. The keys' vacuum waits for such a
    transaction to end, up to a bound (vacuum_appended), and leaves every page all-visible; past
    the bound it vacuums anyway and says so."""
    keys = "'intermediate.int_identity__blocking_keys'::regclass"
    waiting = ("select count(*) from pg_stat_activity where datname = current_database()"
               " and query like '%vacuum_appended: waiting for older transactions%' and pid <> pg_backend_pid()")

    def run_with_older_transaction(db, env, wait_vars: str, release_when_waited: bool, seed: int) -> tuple[str, bool, bool]:
        """A dbt run while an older transaction is open: (its output, whether its vacuum waited,
        whether every page of keys is all-visible after it)."""
        with db.connect(autocommit=True) as c:
            assert sum(demo.append_leads(c, 40, seed=seed).values()) > 0
        with db.connect() as older, db.connect(autocommit=True) as watch:
            older.execute("set transaction isolation level repeatable read")
            older.execute("select 1")  # its snapshot predates every row the run writes
            proc = subprocess.Popen([sys.executable, "-m", "matcher", "dbt", "run", "--vars", wait_vars],
                                    env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            seen = False
            while proc.poll() is None and not seen:
                seen = watch.execute(waiting).fetchone()[0] > 0
                time.sleep(0.02)
            if release_when_waited:
                older.rollback()
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, out[-3000:]
        with db.connect(autocommit=True) as c:
            pages, visible = c.execute(f"select relpages, relallvisible from pg_class where oid = {keys}").fetchone()
        return out, seen, pages > 0 and visible == pages

    with demo_database(server, "matcher_vacuum", leads=300, seed=3) as db:
        env = subprocess_env(db, dbt_target)
        matcher(env, "dbt", "run", "--quiet")
        out, waited, all_visible = run_with_older_transaction(db, env, "{vacuum_appended_wait_seconds: 600}", True, 17)
        assert waited and "transaction(s) older than its rows to end" in out
        assert all_visible, "the vacuum waited for the older transaction and marked every page of keys"
        # an older transaction that outlasts the bound (a tenth of it, after an hourly run): the run
        # goes on, its vacuum marks what it can, and the log says why the rest is not marked
        out, waited, all_visible = run_with_older_transaction(db, env, "{vacuum_appended_wait_seconds: 20}", False, 18)
        assert waited and "older transaction(s) still open; vacuuming anyway" in out
        assert not all_visible


# in byte order (collate "C"): equality lookups only, and half the build time (partial_indexes)
PARTIAL_INDEXES = {
    ("int_identity__records", "phone", "C"), ("int_identity__records", "document_number", "C"),
    ("int_identity__records", "email", "C"), ("int_identity__records", "plate", "C"),
    ("int_identity__records_usable", "name_sorted", "C"),
}


def partial_indexes(c) -> list[tuple[str, str, str]]:
    """(table, column, collation) of every one-column index over non-null rows of the records' tables."""
    return sorted(c.execute(
        "select t.relname::text, a.attname::text, coalesce(co.collname, 'default')::text from pg_index i"
        " join pg_class t on t.oid = i.indrelid join pg_namespace n on n.oid = t.relnamespace"
        " join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]"
        " left join pg_collation co on co.oid = i.indcollation[0]"
        " where n.nspname = 'intermediate' and t.relname in ('int_identity__records', 'int_identity__records_usable')"
        " and i.indnatts = 1 and pg_get_expr(i.indpred, i.indrelid) = format('(%s IS NOT NULL)', a.attname)"
    ).fetchall())


def test_the_hourly_lookups_have_their_partial_indexes_after_any_build(server, dbt_target):
    """The identifier and name lookups of an hourly run (shared identifiers, name frequencies)
    go through partial indexes the models' post-hooks make: there after a first build, made again
    by the next run when one is missing (a database built before they existed), and there once,
    not twice, after a full refresh (which builds the table beside the old one and swaps them).
    One an earlier version made in the database's collation is replaced by one in byte order."""
    with demo_database(server, "matcher_partial", leads=300, seed=5) as db:
        env = subprocess_env(db, dbt_target)
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            assert partial_indexes(c) == sorted(PARTIAL_INDEXES)
            c.execute("drop index intermediate.int_identity__records_email_idx")
            c.execute("drop index intermediate.int_identity__records_usable_name_sorted_idx")
            assert len(partial_indexes(c)) == len(PARTIAL_INDEXES) - 2
            c.execute("drop index intermediate.int_identity__records_phone_idx")
            c.execute("create index on intermediate.int_identity__records (phone) where phone is not null")
            assert ("int_identity__records", "phone", "default") in partial_indexes(c)
            demo.append_leads(c, 20, seed=3)
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            assert partial_indexes(c) == sorted(PARTIAL_INDEXES)
        matcher(env, "dbt", "run", "--quiet", "--full-refresh")
        with db.connect(autocommit=True) as c:
            assert partial_indexes(c) == sorted(PARTIAL_INDEXES)


def test_keys_made_another_way_stop_an_incremental_run_until_a_full_refresh(server, dbt_target):
    """Kept keys and pairs made by one definition must not meet new ones made by another: a run
    under a changed blocking var (or a version whose keys changed) stops before writing and says
    to rebuild; a full refresh under the new definition runs, and then incremental runs do."""
    other = ["--vars", "{max_fuzzy_identifier_length: 8}"]
    kept = ("select (select count(*) from intermediate.int_identity__blocking_keys),"
            " (select count(*) from identity.identity_candidates),"
            " (select max(load_id) from intermediate.int_identity__records)")
    with demo_database(server, "matcher_keydef", leads=300, seed=5) as db:
        env = subprocess_env(db, dbt_target)
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            before = c.execute(kept).fetchone()
            # a new lead, so that the refused run had something to write
            c.execute("insert into raw.cabinet_leads (lead_id, created_at, first_name, last_name, phone)"
                      " values ('keydef-1', now(), 'Ana', 'Keydef', '987654321')")
        for args in (other, []):
            with db.connect(autocommit=True) as c:
                kept_now = c.execute(kept).fetchone()
            refused = subprocess.run([sys.executable, "-m", "matcher", "dbt", "run", "--quiet", *args], env=env,
                                     cwd=ROOT, capture_output=True, text=True, timeout=900)
            assert refused.returncode != 0
            assert "--full-refresh" in refused.stdout + refused.stderr
            with db.connect(autocommit=True) as c:
                assert c.execute(kept).fetchone()[:2] == kept_now[:2], "a refused run writes no key and no pair"
            matcher(env, "dbt", "run", "--quiet", "--full-refresh", *args)
            matcher(env, "dbt", "run", "--quiet", *args)
        with db.connect(autocommit=True) as c:
            after = c.execute(kept).fetchone()
            assert after[0] > before[0] and after[2] > before[2]


def test_raw_rows_hash_alike_in_every_session_and_hashes_made_another_way_stop_a_run(server, dbt_target):
    """A raw row's hash does not depend on the session (a client in another time zone or date
    style must not see every row as changed and rewrite the whole identity layer), and kept
    hashes made by another definition stop an incremental run before it writes, until a full
    refresh."""
    records = "select count(*), max(load_id) from intermediate.int_identity__records"
    with demo_database(server, "matcher_rowhash", leads=300, seed=6) as db:
        env = subprocess_env(db, dbt_target)
        matcher(env | {"PGTZ": "UTC"}, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            built = c.execute(records).fetchone()
        matcher(env | {"PGTZ": "America/Lima", "PGDATESTYLE": "SQL, DMY"}, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            assert c.execute(records).fetchone() == built, "no raw row changed: no record is rewritten"
            # as if the kept hashes had been made by an earlier version
            c.execute("update intermediate.identity_load_state set upstream_name = 'definition:earlier'"
                      " where model_name = 'int_identity__records' and upstream_name like 'definition:%'")
            c.execute("insert into raw.cabinet_leads (lead_id, created_at, first_name, last_name, phone)"
                      " values ('rowhash-1', now(), 'Ana', 'Rowhash', '987654322')")
        refused = subprocess.run([sys.executable, "-m", "matcher", "dbt", "run", "--quiet"], env=env,
                                 cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert refused.returncode != 0
        assert "raw row hashes are defined differently" in refused.stderr and "--full-refresh" in refused.stderr
        with db.connect(autocommit=True) as c:
            assert c.execute(records).fetchone() == built, "a refused run writes nothing"
        matcher(env, "dbt", "run", "--quiet", "--full-refresh")
        matcher(env, "dbt", "run", "--quiet")
        with db.connect(autocommit=True) as c:
            assert c.execute(records).fetchone()[0] == built[0] + 1


def test_a_first_run_scores_every_pair_and_a_limited_one_only_the_pairs_of_its_due_records(server, dbt_target):
    """A first run reads the candidate table whole (every record is due); under --limit only the
    pairs that touch the records it took, the oldest pending ones."""
    pairs_of = ("select count(*) from identity.identity_candidates c"
                " where c.left_uid = any(%(uids)s) or c.right_uid = any(%(uids)s)")
    oldest = "select array_agg(record_uid) from (select record_uid from identity.identity_pending_records" \
             " order by event_at, record_uid limit %s) o"
    for limit in (40, None):
        with demo_database(server, "matcher_first", leads=600, seed=11) as db:
            env = subprocess_env(db, dbt_target)
            matcher(env, "dbt", "run", "--quiet")
            with db.connect(autocommit=True) as c:
                total = c.execute("select count(*) from identity.identity_candidates").fetchone()[0]
                uids = c.execute(oldest, (limit,)).fetchone()[0]
                touching = c.execute(pairs_of, {"uids": uids}).fetchone()[0]
                before = c.execute("select count(*) from identity.identity_pending_records").fetchone()[0]
            ran = json.loads(matcher(env, "run", "--json", *(["--limit", str(limit)] if limit else [])).stdout)
            assert ran["processed"] == (limit or len(uids))
            assert ran["pairs_scored"] == touching
            assert 0 < touching < total if limit else touching == total
            # "still pending" equals the view's count after a first run and after a run that finds
            # attempts (another way of choosing the due records), which links more after a limited
            # first run and nothing after a whole one; each run records what it reported
            again = json.loads(matcher(env, "run", "--json").stdout)
            with db.connect(autocommit=True) as c:
                pending = c.execute("select count(*) from identity.identity_pending_records").fetchone()[0]
                runs = dict(c.execute("select run_id, pending from canon.match_runs where command = 'run'").fetchall())
            assert 0 < pending < before
            assert again["pending"] == pending == runs[again["run_id"]]
            assert (again["matched"] > 0) if limit else (again["matched"] == 0 and ran["pending"] == pending)
            assert ran["pending"] == runs[ran["run_id"]] == again["pending"] + again["matched"]
