"""The demo generator: contract, determinism, ground truth, mess, incremental appends.

Each test writes into its own schema of the session database, so nothing here touches `raw`.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from matcher import demo
from matcher.demo import RAW_TABLES, DemoSpec, append_leads, create_raw_schema, edit_drivers, generate

NOW = datetime(2026, 1, 12, 10, tzinfo=UTC)

# The contract of docs/architecture.md, as information_schema spells the types.
CONTRACT = {
    "cabinet_leads": [
        ("lead_id", "text"), ("created_at", "timestamp with time zone"), ("first_name", "text"),
        ("last_name", "text"), ("phone", "text"), ("document_number", "text"), ("email", "text"),
        ("license_plate", "text"),
    ],
    "scout_registrations": [
        ("registration_id", "text"), ("registered_at", "timestamp with time zone"), ("scout_id", "text"),
        ("full_name", "text"), ("phone", "text"), ("document_number", "text"), ("license_plate", "text"),
    ],
    "fleet_migrations": [
        ("migration_id", "text"), ("migrated_at", "timestamp with time zone"), ("from_park", "text"),
        ("full_name", "text"), ("phone", "text"), ("document_number", "text"), ("license_plate", "text"),
    ],
    "drivers": [
        ("driver_id", "text"), ("hired_at", "timestamp with time zone"), ("full_name", "text"),
        ("phone", "text"), ("license_number", "text"), ("email", "text"), ("car_plate", "text"),
        ("updated_at", "timestamp with time zone"),
    ],
    "driver_activity": [("driver_id", "text"), ("activity_date", "date"), ("completed_trips", "integer")],
    "claims": [
        ("claim_id", "text"), ("driver_id", "text"), ("lead_id", "text"), ("milestone", "integer"),
        ("amount", "numeric"), ("claimed_at", "timestamp with time zone"), ("status", "text"),
    ],
    "ground_truth": [("source_table", "text"), ("source_pk", "text"), ("true_entity_id", "text")],
}  # fmt: skip
PRIMARY_KEYS = {
    "cabinet_leads": ["lead_id"],
    "scout_registrations": ["registration_id"],
    "fleet_migrations": ["migration_id"],
    "drivers": ["driver_id"],
    "driver_activity": ["driver_id", "activity_date"],
    "claims": ["claim_id"],
    "ground_truth": ["source_table", "source_pk"],
}
PERSON_TABLES = {
    "cabinet_leads": ("lead_id", "created_at"),
    "scout_registrations": ("registration_id", "registered_at"),
    "fleet_migrations": ("migration_id", "migrated_at"),
    "drivers": ("driver_id", "hired_at"),
}
LEAD_TABLES = ("cabinet_leads", "scout_registrations", "fleet_migrations")


@pytest.fixture
def schema(conn: psycopg.Connection):
    name = f"demo_{uuid.uuid4().hex[:8]}"
    yield name
    conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


@pytest.fixture
def schema2(conn: psycopg.Connection):
    name = f"demo_{uuid.uuid4().hex[:8]}"
    yield name
    conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def table_md5(conn, schema: str, table: str) -> str:
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in PRIMARY_KEYS[table])
    return conn.execute(
        sql.SQL("select md5(coalesce(string_agg(t::text, E'\\n' order by {}), '')) from {} t").format(
            keys, sql.Identifier(schema, table)
        )
    ).fetchone()[0]


def all_md5(conn, schema: str) -> dict[str, str]:
    return {t: table_md5(conn, schema, t) for t in (*RAW_TABLES, "ground_truth")}


def rows(conn, query: str, *params):
    return conn.execute(query, params).fetchall()


def person_records(conn, schema: str) -> list[dict]:
    """Every person record with its true entity, in one shape."""
    s = sql.Identifier(schema)
    query = sql.SQL(
        """
        select 'cabinet_leads', lead_id, concat_ws(' ', first_name, last_name), phone, document_number, email,
               license_plate
          from {s}.cabinet_leads
        union all
        select 'scout_registrations', registration_id, full_name, phone, document_number, null, license_plate
          from {s}.scout_registrations
        union all
        select 'fleet_migrations', migration_id, full_name, phone, document_number, null, license_plate
          from {s}.fleet_migrations
        union all
        select 'drivers', driver_id, full_name, phone, license_number, email, car_plate from {s}.drivers
        """
    ).format(s=s)
    truth = {(t, pk): e for t, pk, e in conn.execute(sql.SQL("select * from {}.ground_truth").format(s))}
    keys = ("table", "pk", "name", "phone", "document", "email", "plate")
    out = []
    for r in conn.execute(query):
        rec = dict(zip(keys, r, strict=True))
        rec["entity"] = truth.get((rec["table"], rec["pk"]))
        out.append(rec)
    return out


def national_phone(value: str | None) -> str | None:
    """A simplified Peruvian phone normalization (the dbt macro is the real one)."""
    if value is None:
        return None
    digits = re.sub(r"\D", "", value)
    if digits.startswith("0051"):
        digits = digits[4:]
    elif digits.startswith("51") and len(digits) == 11:
        digits = digits[2:]
    return digits if re.fullmatch(r"9\d{8}", digits) and digits != "999999999" else None


def clean_document(value: str | None) -> str | None:
    if value is None:
        return None
    return re.sub(r"[^0-9A-Za-z]", "", value).upper() or None


# --------------------------------------------------------------------------------------


def test_contract_columns_types_and_keys(conn, schema, monkeypatch):
    create_raw_schema(conn, schema)
    # big loads drop the primary keys and rebuild them afterwards: take that path here
    monkeypatch.setattr(demo, "_REBUILD_KEYS_ROWS", 1)
    generate(conn, DemoSpec(leads=200, seed=1, now=NOW), schema)
    for table, expected in CONTRACT.items():
        got = rows(
            conn,
            "select column_name, data_type from information_schema.columns"
            " where table_schema = %s and table_name = %s order by ordinal_position",
            schema,
            table,
        )
        assert got == expected, table
        pk = rows(
            conn,
            """
            select k.column_name from information_schema.table_constraints c
            join information_schema.key_column_usage k
              on k.constraint_name = c.constraint_name and k.table_schema = c.table_schema
            where c.table_schema = %s and c.table_name = %s and c.constraint_type = 'PRIMARY KEY'
            order by k.ordinal_position
            """,
            schema,
            table,
        )
        assert [r[0] for r in pk] == PRIMARY_KEYS[table], table
    assert set(demo.RAW_TABLES) == set(CONTRACT) - {"ground_truth"}


def test_create_raw_schema_is_idempotent_and_drop_recreates(conn, schema):
    create_raw_schema(conn, schema)
    create_raw_schema(conn, schema)
    generate(conn, DemoSpec(leads=100, seed=1, now=NOW), schema)
    create_raw_schema(conn, schema)  # if not exists: data stays
    assert rows(conn, f'select count(*) from "{schema}".cabinet_leads')[0][0] > 0
    create_raw_schema(conn, schema, drop=True)
    assert rows(conn, f'select count(*) from "{schema}".cabinet_leads')[0][0] == 0


def test_generate_is_deterministic_and_seed_sensitive(conn, schema, schema2, monkeypatch):
    spec = DemoSpec(leads=600, seed=7, now=NOW)
    counts = generate(conn, spec, schema)
    first = all_md5(conn, schema)
    assert generate(conn, spec, schema) == counts  # truncate + refill
    assert all_md5(conn, schema) == first
    monkeypatch.setattr(demo, "_CHUNK_ROWS", 37)  # many COPY chunks, same bytes
    generate(conn, spec, schema2)  # another schema, same bytes
    assert all_md5(conn, schema2) == first
    for table, n in counts.items():
        assert rows(conn, f'select count(*) from "{schema}"."{table}"')[0][0] == n, table

    generate(conn, DemoSpec(leads=600, seed=8, now=NOW), schema2)
    other = all_md5(conn, schema2)
    for table in (*RAW_TABLES, "ground_truth"):
        assert other[table] != first[table], table


def test_sizes_keys_and_channel_mix(conn, schema):
    counts = generate(conn, DemoSpec(leads=3000, seed=3, now=NOW), schema)
    assert sum(counts[t] for t in LEAD_TABLES) == 3000
    assert counts["drivers"] == 1500
    assert counts["ground_truth"] == 4500
    assert 0.50 <= counts["cabinet_leads"] / 3000 <= 0.60
    assert 0.25 <= counts["scout_registrations"] / 3000 <= 0.35
    assert 0.11 <= counts["fleet_migrations"] / 3000 <= 0.19
    assert counts["driver_activity"] > counts["drivers"]
    assert counts["claims"] > 0
    key_patterns = {
        ("cabinet_leads", "lead_id"): "CL", ("scout_registrations", "registration_id"): "SR",
        ("fleet_migrations", "migration_id"): "FM", ("drivers", "driver_id"): "D", ("claims", "claim_id"): "CLM",
        ("ground_truth", "true_entity_id"): "P",
    }  # fmt: skip
    for (table, key), prefix in key_patterns.items():
        bad = rows(conn, f'select count(*) from "{schema}".{table} where {key} !~ %s', f"^{prefix}[0-9]{{8}}$")
        assert bad[0][0] == 0, table
    assert rows(conn, f'select count(distinct scout_id) from "{schema}".scout_registrations')[0][0] > 10


def test_ground_truth_covers_every_person_record_exactly_once(conn, schema):
    generate(conn, DemoSpec(leads=800, drivers=500, seed=5, now=NOW), schema)
    source_tables = {r[0] for r in rows(conn, f'select distinct source_table from "{schema}".ground_truth')}
    assert source_tables == set(PERSON_TABLES)
    for table, (key, _) in PERSON_TABLES.items():
        missing, extra = rows(
            conn,
            f"""
            select
              (select count(*) from "{schema}".{table} r where (select count(*) from "{schema}".ground_truth g
                   where g.source_table = %s and g.source_pk = r.{key}) <> 1),
              (select count(*) from "{schema}".ground_truth g where g.source_table = %s
                   and not exists (select 1 from "{schema}".{table} r where r.{key} = g.source_pk))
            """,
            table,
            table,
        )[0]
        assert (missing, extra) == (0, 0), table
    # person types: cross-channel persons, drivers with and without a lead
    by_entity: dict[str, Counter] = defaultdict(Counter)
    for t, _, e in rows(conn, f'select * from "{schema}".ground_truth'):
        by_entity[e][t] += 1
    lead_channels = [sum(1 for t in c if t != "drivers") for c in by_entity.values()]
    assert any(n >= 2 for n in lead_channels), "no person reached us through two channels"
    assert any(c["drivers"] and sum(c.values()) > 1 for c in by_entity.values()), "no lead became a driver"
    assert any(c["drivers"] and sum(c.values()) == 1 for c in by_entity.values()), "no driver_direct person"
    assert any(not c["drivers"] for c in by_entity.values()), "every lead became a driver"
    assert any(max(c[t] for t in LEAD_TABLES) >= 2 for c in by_entity.values()), "no duplicate in one channel"


def test_timelines_activity_and_claims(conn, schema):
    generate(conn, DemoSpec(leads=1000, seed=9, now=NOW), schema)
    s = f'"{schema}"'
    leads = f"""
        select lead_id k, created_at t from {s}.cabinet_leads
        union all select registration_id, registered_at from {s}.scout_registrations
        union all select migration_id, migrated_at from {s}.fleet_migrations"""
    hired_before_first_lead = rows(
        conn,
        f"""
        select count(*) from (
          select d.driver_id from {s}.drivers d
          join {s}.ground_truth gd on gd.source_table = 'drivers' and gd.source_pk = d.driver_id
          join {s}.ground_truth gl on gl.source_table <> 'drivers' and gl.true_entity_id = gd.true_entity_id
          join ({leads}) l on l.k = gl.source_pk
          group by d.driver_id, d.hired_at having d.hired_at <= min(l.t)) x
        """,
    )[0][0]
    assert hired_before_first_lead == 0
    assert rows(conn, f"select count(*) from {s}.drivers where updated_at < hired_at")[0][0] == 0
    max_ts = rows(conn, f"select max(t) from ({leads}) l")[0][0]
    assert max_ts <= NOW
    assert rows(conn, f"select min(t) from ({leads}) l")[0][0] >= NOW - timedelta(days=90)

    recent = rows(
        conn,
        f"""
        select count(distinct a.driver_id),
               count(distinct a.driver_id) filter (where not exists (
                 select 1 from {s}.ground_truth gl where gl.source_table <> 'drivers'
                   and gl.true_entity_id = gd.true_entity_id))
        from {s}.driver_activity a
        join {s}.ground_truth gd on gd.source_table = 'drivers' and gd.source_pk = a.driver_id
        where a.activity_date > %s::date - 7 and a.activity_date <= %s::date
        """,
        NOW.date(),
        NOW.date(),
    )[0]
    assert recent[0] > 0 and recent[1] > 0  # including drivers whose person has no lead
    assert rows(conn, f"select count(*) from {s}.driver_activity where completed_trips < 1")[0][0] == 0
    assert rows(
        conn,
        f"select count(*) from {s}.driver_activity a join {s}.drivers d using (driver_id)"
        " where a.activity_date < (d.hired_at at time zone 'UTC')::date",
    )[0][0] == 0

    assert {r[0] for r in rows(conn, f"select distinct milestone from {s}.claims")} == {1, 5, 25}
    assert {r[0] for r in rows(conn, f"select distinct status from {s}.claims")} == {"paid", "pending", "rejected"}
    claimed_before_hire = f"select count(*) from {s}.claims c join {s}.drivers d using (driver_id) where c.claimed_at <= d.hired_at"
    assert rows(conn, claimed_before_hire)[0][0] == 0
    assert rows(conn, f"select count(*) from {s}.claims where amount <= 0 or claimed_at > %s", NOW)[0][0] == 0
    # the lead is named only sometimes, and when it is, it is a lead of the driver's own person
    named, eligible, wrong = rows(
        conn,
        f"""
        select count(*) filter (where c.lead_id is not null),
               count(*) filter (where exists (select 1 from {s}.ground_truth gl
                   where gl.source_table <> 'drivers' and gl.true_entity_id = gd.true_entity_id)),
               count(*) filter (where c.lead_id is not null and not exists (select 1 from {s}.ground_truth gl
                   where gl.source_pk = c.lead_id and gl.true_entity_id = gd.true_entity_id))
        from {s}.claims c join {s}.ground_truth gd on gd.source_table = 'drivers' and gd.source_pk = c.driver_id
        """,
    )[0]
    assert wrong == 0
    assert 0.25 <= named / eligible <= 0.55


def test_default_mess_is_present_but_resolvable(conn, schema):
    spec = DemoSpec(leads=2000, seed=11, now=NOW)
    generate(conn, spec, schema)
    recs = person_records(conn, schema)
    phones = [r["phone"] for r in recs if r["phone"] is not None]
    shapes = Counter(re.sub(r"\d", "9", p) for p in phones)
    for shape in ("999999999", "+99 999 999 999", "9" * 13, "99-999-999-999", "999 999 999", "+99999999999"):
        assert shapes[shape] > 0, shape
    assert any(p.startswith("(01)") for p in phones)  # a landline
    assert any(len(re.sub(r"\D", "", p)) in (8, 10) for p in phones)  # missing / extra digit
    assert {"000000000", "SIN DATO", "N/A", ""} & set(phones)
    assert any(r["phone"] is None for r in recs)

    # a dispatcher's phone shared by many unrelated records, still attributed to true persons
    holders: dict[str, set] = defaultdict(set)
    for r in recs:
        if r["table"] != "drivers" and national_phone(r["phone"]):
            holders[national_phone(r["phone"])].add(r["entity"])
    assert max(len(e) for e in holders.values()) >= 20

    docs = [r["document"] for r in recs if r["document"] is not None]
    assert {"00000000", "SIN DATO", "N/A", "S/N"} & set(docs)
    assert any(re.fullmatch(r"\d{2}[ .-]\d{3}[ .-]\d{3}", d) for d in docs)  # separators
    licences = [r["document"] for r in recs if r["table"] == "drivers" and r["document"]]
    assert any(d.startswith("Q") for d in licences) and any(d.startswith("q") for d in licences)

    names = [r["name"] for r in recs if r["name"]]
    assert any(re.search(r"[áéíóúñÁÉÍÓÚÑ]", n) for n in names)
    assert any(re.search(r"\b(ramirez|nunez|pena|sanchez|rodriguez|huaman)\b", n, re.I) for n in names)
    assert any(n.isupper() for n in names) and any(n.islower() for n in names)
    assert any("  " in n or n != n.strip() for n in names)
    assert any(re.match(r"^[A-ZÁÉÍÓÚÑ]\. ", n) for n in names)  # initials
    surnames_first = [
        r for r in recs if r["table"] == "drivers" and r["name"] and r["name"].split()[0].capitalize() in demo.SURNAMES
        and r["name"].split()[0].capitalize() not in demo.GIVEN_NAMES
    ]
    assert surnames_first  # "QUISPE MAMANI JUAN CARLOS"

    emails = [r["email"] for r in recs if r["email"] is not None]
    assert any(e != e.strip() or e != e.lower() for e in emails)
    assert any("@" not in e or e.endswith("@") for e in emails)
    plates = [r["plate"] for r in recs if r["plate"]]
    assert any(re.fullmatch(r"[A-Z0-9]{3}-\d{3}", p) for p in plates)
    assert any(re.fullmatch(r"[A-Z0-9]{3}\d{3}", p) for p in plates)
    assert any(re.fullmatch(r"[a-z0-9]{3}[ -]\d{3}", p) for p in plates)

    # resolvable: nearly every record keeps its true phone or its true document
    truth = demo._person_attrs(spec.seed, np.array([int(r["entity"][1:]) for r in recs]))
    keeps = 0
    no_ids = 0
    for i, r in enumerate(recs):
        doc = clean_document(r["document"])
        if doc and doc[0] == "Q":
            doc = doc[1:]
        keeps += national_phone(r["phone"]) == str(truth["phone"][i]) or doc == str(truth["dni"][i])
        if r["table"] != "drivers":
            usable = (
                national_phone(r["phone"])
                or (doc and re.fullmatch(r"\d{8}", doc) and len(set(doc)) > 1)
                or (r["email"] and re.fullmatch(r"\S+@\S+\.\S+", r["email"].strip()))
                or (r["plate"] and len(re.sub(r"\W", "", r["plate"])) == 6)
            )
            no_ids += not usable
    assert keeps / len(recs) >= 0.97
    assert 0.002 <= no_ids / 2000 <= 0.03


def test_clean_mess_has_none_of_it(conn, schema):
    generate(conn, DemoSpec(leads=1000, seed=11, mess="clean", now=NOW), schema)
    recs = person_records(conn, schema)
    canonical = set(demo.GIVEN_NAMES) | set(demo.SURNAMES)
    entities_by_phone: dict[str, set] = defaultdict(set)
    for r in recs:
        assert r["phone"] and re.fullmatch(r"9\d{8}", r["phone"]), r["pk"]
        assert r["document"] and re.fullmatch(r"\d{8}", r["document"]), r["pk"]
        assert r["email"] is None or re.fullmatch(r"[a-z0-9._]+@[a-z]+\.[a-z]+", r["email"]), r["pk"]
        assert r["plate"] is None or re.fullmatch(r"[A-Z][A-Z0-9][A-Z]-\d{3}", r["plate"]), r["pk"]
        assert r["name"] and r["name"] == " ".join(r["name"].split()), r["pk"]
        assert set(r["name"].split()) <= canonical, r["pk"]
        entities_by_phone[r["phone"]].add(r["entity"])
    assert max(len(e) for e in entities_by_phone.values()) == 1  # no shared phones
    s = f'"{schema}"'
    # cabinet names are in canonical order: given names in first_name
    assert rows(conn, f"select count(*) from {s}.cabinet_leads where last_name is null or last_name = ''")[0][0] == 0


def test_hard_mess_is_messier_than_default(conn, schema, schema2):
    generate(conn, DemoSpec(leads=1500, seed=4, now=NOW), schema)
    generate(conn, DemoSpec(leads=1500, seed=4, mess="hard", now=NOW), schema2)

    def clean_share(s):
        recs = person_records(conn, s)
        return sum(bool(r["phone"] and re.fullmatch(r"9\d{8}", r["phone"])) for r in recs) / len(recs)

    assert clean_share(schema2) < clean_share(schema) - 0.15


def test_append_leads_adds_new_keys_persons_and_truth(conn, schema, schema2):
    spec = DemoSpec(leads=500, seed=2, now=NOW)
    generate(conn, spec, schema)
    s = f'"{schema}"'
    before_keys = {t: {r[0] for r in rows(conn, f"select {PERSON_TABLES[t][0]} from {s}.{t}")} for t in LEAD_TABLES}
    before_entities = {r[0] for r in rows(conn, f"select distinct true_entity_id from {s}.ground_truth")}
    driver_entities = {
        r[0] for r in rows(conn, f"select true_entity_id from {s}.ground_truth where source_table = 'drivers'")
    }
    later = NOW + timedelta(days=1)
    counts = append_leads(conn, 150, seed=21, schema=schema, spec=DemoSpec(leads=500, seed=2, now=later))
    assert sum(counts[t] for t in LEAD_TABLES) == 150 == counts["ground_truth"]

    new_rows = []
    for t in LEAD_TABLES:
        key, ts = PERSON_TABLES[t]
        after = {r[0]: r[1] for r in rows(conn, f"select {key}, {ts} from {s}.{t}")}
        assert before_keys[t] <= after.keys()
        added = after.keys() - before_keys[t]
        assert len(added) == counts[t]
        assert all(k > max(before_keys[t]) for k in added), t  # fixed-width keys: text order is numeric order
        assert all(later - timedelta(hours=12) <= after[k] <= later for k in added), t
        new_rows += [(t, k) for k in added]
    truth = {(t, pk): e for t, pk, e in rows(conn, f"select * from {s}.ground_truth")}
    new_entities = [truth[r] for r in new_rows]  # KeyError: a new lead without ground truth
    assert any(e not in before_entities for e in new_entities)
    assert any(e in driver_entities for e in new_entities)  # a driver now arriving as a lead
    assert any(e in before_entities - driver_entities for e in new_entities)

    # appends stack, and the same history gives the same bytes
    append_leads(conn, 40, seed=22, schema=schema, spec=DemoSpec(leads=500, seed=2, now=later))
    assert rows(conn, f"select count(*) from {s}.ground_truth")[0][0] == 750 + 190
    generate(conn, spec, schema2)
    append_leads(conn, 150, seed=21, schema=schema2, spec=DemoSpec(leads=500, seed=2, now=later))
    append_leads(conn, 40, seed=22, schema=schema2, spec=DemoSpec(leads=500, seed=2, now=later))
    assert all_md5(conn, schema) == all_md5(conn, schema2)


def test_append_leads_reuses_a_returning_person_identifiers(conn, schema):
    """A returning person's new lead carries the same identifiers as their earlier records."""
    generate(conn, DemoSpec(leads=400, seed=6, mess="clean", now=NOW), schema)
    before = Counter(r[0] for r in rows(conn, f'select true_entity_id from "{schema}".ground_truth'))
    append_leads(conn, 100, seed=1, schema=schema)  # spec omitted: read from the stored metadata
    after = Counter(r[0] for r in rows(conn, f'select true_entity_id from "{schema}".ground_truth'))
    returning = [e for e in before if after[e] > before[e]]
    assert len(returning) >= 20
    phones: dict[str, set] = defaultdict(set)
    documents: dict[str, set] = defaultdict(set)
    for r in person_records(conn, schema):
        phones[r["entity"]].add(r["phone"])
        documents[r["entity"]].add(r["document"])
    assert all(len(phones[e]) == 1 and len(documents[e]) == 1 for e in returning)


def test_edit_drivers_changes_the_e_mail_of_a_seeded_pick_and_nothing_else(conn, schema, schema2):
    """The benchmark's edited drivers: n of them get a new e-mail and updated_at, chosen by the
    seed; every other row and the ground truth stay as they were."""
    generate(conn, DemoSpec(leads=300, seed=4, now=NOW), schema)
    s = f'"{schema}"'
    before = {r[0]: r[1:] for r in rows(conn, f"select driver_id, email, updated_at, phone, full_name from {s}.drivers")}
    untouched = {t: table_md5(conn, schema, t) for t in (*RAW_TABLES, "ground_truth") if t != "drivers"}
    assert edit_drivers(conn, 25, seed=8, schema=schema) == 25
    after = {r[0]: r[1:] for r in rows(conn, f"select driver_id, email, updated_at, phone, full_name from {s}.drivers")}
    changed = {k for k in before if after[k] != before[k]}
    assert len(changed) == 25 and after.keys() == before.keys()
    for k in changed:
        email, updated_at, phone, name = after[k]
        old = before[k][0] if (before[k][0] or "").strip() else f"{k}@mail.pe"
        assert email == "e8." + old and email != before[k][0]
        assert (before[k][1] is None or updated_at > before[k][1]) and (phone, name) == before[k][2:]
    assert {t: table_md5(conn, schema, t) for t in untouched} == untouched
    # the same seed picks the same drivers, another seed others; asking for more edits them all
    generate(conn, DemoSpec(leads=300, seed=4, now=NOW), schema2)
    edit_drivers(conn, 25, seed=8, schema=schema2)
    assert {r[0] for r in rows(conn, f'select driver_id from "{schema2}".drivers where email like %s', "e8.%")} == changed
    assert edit_drivers(conn, 25, seed=9, schema=schema2) == 25
    again = {r[0] for r in rows(conn, f'select driver_id from "{schema2}".drivers where email like %s', "e9.%")}
    assert len(again) == 25 and again != changed
    assert edit_drivers(conn, 10**6, seed=1, schema=schema2) == len(before)
    assert edit_drivers(conn, 0, seed=1, schema=schema2) == 0
    with pytest.raises(ValueError):
        edit_drivers(conn, -1, seed=1, schema=schema2)


def test_generate_commits_on_a_non_autocommit_connection(conn, db_url, schema):
    with psycopg.connect(db_url) as other:
        assert not other.autocommit
        other.execute("select 1")  # leave a transaction open: generate must still commit its work
        generate(other, DemoSpec(leads=100, seed=1, now=NOW), schema)
        other.rollback()
    assert rows(conn, f'select count(*) from "{schema}".ground_truth')[0][0] == 150


def test_a_failed_load_leaves_the_previous_data(conn, schema, monkeypatch):
    generate(conn, DemoSpec(leads=100, seed=1, now=NOW), schema)
    before = all_md5(conn, schema)
    real_copy = demo._copy_table

    def failing_copy(conn_, schema_, table, cols):
        if table == "drivers":
            raise RuntimeError("disk full")
        return real_copy(conn_, schema_, table, cols)

    monkeypatch.setattr(demo, "_copy_table", failing_copy)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(conn, DemoSpec(leads=300, seed=2, now=NOW), schema)
    assert all_md5(conn, schema) == before  # one transaction: all or nothing


def test_copy_escapes_separators_and_backslashes(conn, schema):
    create_raw_schema(conn, schema)
    values = ["tab\there", "new\nline", "back\\slash", "\\N", "cr\rhere", "", "plain"]
    nulls = np.array([False, False, False, False, False, False, True])
    text = np.array(values, dtype=np.dtypes.StringDType())
    demo._copy_table(conn, schema, "ground_truth", [(text, None), (text, None), (text, nulls)])
    got = rows(conn, f'select source_pk, true_entity_id from "{schema}".ground_truth')
    assert sorted(got, key=lambda r: r[0]) == sorted(
        [(v, None if n else v) for v, n in zip(values, nulls, strict=True)], key=lambda r: r[0]
    )


def test_rejects_bad_specs(conn, schema):
    with pytest.raises(ValueError):
        generate(conn, DemoSpec(leads=10, mess="chaos", now=NOW), schema)
    with pytest.raises(ValueError):
        generate(conn, DemoSpec(leads=-1, now=NOW), schema)
    create_raw_schema(conn, schema)
    with pytest.raises(ValueError):  # no metadata: not demo data, and no spec to fall back on
        append_leads(conn, 10, seed=1, schema=schema)


def test_vocabulary_and_module_hygiene():
    assert len(demo.GIVEN_NAMES) >= 200 and len(demo.SURNAMES) >= 300
    assert len(set(demo.GIVEN_NAMES)) == len(demo.GIVEN_NAMES)
    for name in ("Núñez", "Peña", "Ramírez", "Quispe", "Huamán", "Mamani"):
        assert name in demo.SURNAMES
    source = Path(demo.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*print\(", source, re.M)
    assert 'getLogger("matcher.demo")' in source
