"""Deterministic demo data for the raw contract, with a ground-truth table.

The generator writes the six raw tables of ``docs/architecture.md`` plus
``<schema>.ground_truth`` (one row per person record: ``source_table``, ``source_pk``,
``true_entity_id``) so that match quality can be measured.

Design, briefly:

* **Persons are a pure function of ``(seed, person number)``.** Names, DNI, phone, email and
  plate come from a counter-based hash of the person number, and DNI / phone / plate / email
  numbers go through keyed bijections, so they are unique by construction. This lets
  :func:`append_leads` rebuild an existing person's identifiers from ``ground_truth`` alone.
* **Everything else comes from one ``numpy.random.default_rng(seed)``** drawn column-wise in a
  fixed order: same spec -> byte-identical tables.
* **Mess is decided as a "kind" per field first** (clean, format variant, typo, placeholder,
  missing, dispatcher ...), then rendered in vectorized groups. Deciding first lets us enforce
  the resolvability rule: apart from a rare "wrecked" share, every record keeps its phone or
  its document intact.
* Tables are loaded with ``COPY ... FROM STDIN`` (text chunks built with numpy string ops) by
  a worker thread, while the next table is being built; big loads rebuild primary keys at the
  end instead of maintaining them row by row. Everything happens in one transaction.

Mess probabilities are in ``MESS_BASE`` (values for ``mess="default"``; "hard" is 2.5x,
"clean" is none of it).

No function here logs personal data: only counts and timings.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

log = logging.getLogger("matcher.demo")

__all__ = [
    "DemoSpec",
    "RAW_TABLES",
    "LEAD_TABLES",
    "PERSON_TABLES",
    "GROUND_TRUTH_TABLE",
    "MESS_LEVELS",
    "create_raw_schema",
    "generate",
    "append_leads",
]

# --------------------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------------------

RAW_TABLES: tuple[str, ...] = (
    "cabinet_leads",
    "scout_registrations",
    "fleet_migrations",
    "drivers",
    "driver_activity",
    "claims",
)
LEAD_TABLES: tuple[str, ...] = RAW_TABLES[:3]
PERSON_TABLES: tuple[str, ...] = RAW_TABLES[:4]
GROUND_TRUTH_TABLE = "ground_truth"

_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "cabinet_leads": (
        ("lead_id", "text"),
        ("created_at", "timestamptz"),
        ("first_name", "text"),
        ("last_name", "text"),
        ("phone", "text"),
        ("document_number", "text"),
        ("email", "text"),
        ("license_plate", "text"),
    ),
    "scout_registrations": (
        ("registration_id", "text"),
        ("registered_at", "timestamptz"),
        ("scout_id", "text"),
        ("full_name", "text"),
        ("phone", "text"),
        ("document_number", "text"),
        ("license_plate", "text"),
    ),
    "fleet_migrations": (
        ("migration_id", "text"),
        ("migrated_at", "timestamptz"),
        ("from_park", "text"),
        ("full_name", "text"),
        ("phone", "text"),
        ("document_number", "text"),
        ("license_plate", "text"),
    ),
    "drivers": (
        ("driver_id", "text"),
        ("hired_at", "timestamptz"),
        ("full_name", "text"),
        ("phone", "text"),
        ("license_number", "text"),
        ("email", "text"),
        ("car_plate", "text"),
        ("updated_at", "timestamptz"),
    ),
    "driver_activity": (
        ("driver_id", "text"),
        ("activity_date", "date"),
        ("completed_trips", "int"),
    ),
    "claims": (
        ("claim_id", "text"),
        ("driver_id", "text"),
        ("lead_id", "text"),
        ("milestone", "int"),
        ("amount", "numeric"),
        ("claimed_at", "timestamptz"),
        ("status", "text"),
    ),
    "ground_truth": (
        ("source_table", "text"),
        ("source_pk", "text"),
        ("true_entity_id", "text"),
    ),
}
_PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "cabinet_leads": ("lead_id",),
    "scout_registrations": ("registration_id",),
    "fleet_migrations": ("migration_id",),
    "drivers": ("driver_id",),
    "driver_activity": ("driver_id", "activity_date"),
    "claims": ("claim_id",),
    "ground_truth": ("source_table", "source_pk"),
}
# Key prefixes; 8 digits leaves room for 10M+ rows per table.
_KEY_PREFIX = {
    "cabinet_leads": "CL",
    "scout_registrations": "SR",
    "fleet_migrations": "FM",
    "drivers": "D",
    "claims": "CLM",
}
_KEY_DIGITS = 8
_PERSON_PREFIX = "P"

# record "table codes" used internally for person records
_CAB, _SCOUT, _MIG, _DRV = 0, 1, 2, 3

MESS_LEVELS: dict[str, float] = {"clean": 0.0, "default": 1.0, "hard": 2.5}

_S = np.dtypes.StringDType()
_DAY = 86_400
_HOUR = 3_600

# --------------------------------------------------------------------------------------
# Vocabulary (Peruvian / Latin American), most frequent first: frequencies are Zipf-like.
# --------------------------------------------------------------------------------------

_MALE_GIVEN = """
Juan José Luis Carlos Jorge Miguel César Víctor Javier Jesús Manuel Pedro Julio Alberto
Fernando Ángel Antonio Raúl Jhon Daniel Walter Wilmer Edwin Roberto Ricardo Eduardo
Francisco Marco Óscar Alejandro Andrés David Diego Enrique Félix Gustavo Héctor Hugo Iván
Jaime Joel Kevin Martín Mario Nicolás Pablo Percy Rafael Ramón Rubén Santiago Segundo
Sergio Teodoro Tomás Wilfredo Alfredo Armando Arturo Augusto Benjamín Christian Cristian
Darwin Elmer Elías Emilio Erick Fabián Franklin Freddy Gabriel Germán Gilberto Gonzalo
Guillermo Henry Hernán Ismael Jhonatan Joaquín Jonathan Julián Leonardo Lorenzo Lucas
Marcos Mateo Máximo Moisés Néstor Orlando Patricio Raymundo Renzo Reynaldo Rodrigo Rolando
Rómulo Samuel Saúl Sebastián Simón Teófilo Ulises Valentín Vicente Wilson Yuri Zacarías
Abel Adrián Agustín Aldo Américo Aníbal Bruno Ciro Dante Edgar Efraín Elvis Esteban Eusebio
Fidel Gerardo Gregorio Heriberto Humberto Isaac Jacinto Leoncio Lino Marcial Nelson Octavio
Alan Junior Brayan Anthony Jean Piero Gianfranco Jhair Yampier Alexis
""".split()

_FEMALE_GIVEN = """
María Rosa Ana Carmen Luz Juana Elizabeth Milagros Gladys Flor Silvia Patricia Sofía Lucía
Valeria Camila Daniela Andrea Carla Diana Gabriela Jessica Karina Katherine Liliana Lourdes
Maribel Marleny Martha Mercedes Mónica Nancy Norma Olga Pilar Raquel Rocío Ruth Sandra Sonia
Susana Teresa Verónica Victoria Yolanda Zulema Ángela Beatriz Cecilia Claudia Dolores Elena
Esther Fiorella Gloria Irma Isabel Jacqueline Julia Karen Leticia Margarita Noemí Inés
Yesenia Yaneth Edith Delia Estefanía Abigail Mariela Nelly Roxana
""".split()

_SURNAMES = """
Quispe Flores Sánchez Rodríguez García Rojas Gonzales Huamán Chávez Mamani Vásquez Ramos
Ramírez Mendoza Torres Díaz Castillo Espinoza López Pérez Vargas Cruz Gutiérrez Fernández
Romero Gómez Ruiz Reyes Castro Álvarez Martínez Hernández Córdova Salazar Morales Herrera
Medina Aguilar Silva Jiménez Ríos Cárdenas Paredes Palomino Ccama Condori Ticona Apaza Cusi
Huanca Choque Layme Yupanqui Ccori Poma Chambi Coaquira Machaca Pari Calla Tito Ccahuana
Sucasaire Soncco Huarachi Nina Luque Zapata Núñez Peña Muñoz Ortiz Delgado Vega Navarro
Campos Guerrero Lozano Cabrera Valdivia Vilca Arias Benites Cáceres Carrasco Carrillo
Chumpitaz Contreras Cortez Cuba Cueva Domínguez Escobar Estrada Farfán Figueroa Fuentes
Gallardo Gamarra Guevara Guzmán Hidalgo Huertas Ibáñez Infante Jara Lazo León Lévano Linares
Llanos Loayza Luna Maldonado Manrique Marín Mejía Meléndez Miranda Molina Montes Montoya Mora
Moreno Muñante Neyra Nieto Ochoa Olivares Orellana Ortega Pacheco Padilla Palacios Pantoja
Paz Pineda Ponce Prado Quiroz Quintana Rivera Robles Rosales Salas Salinas Sandoval Santos
Sarmiento Segura Sierra Solís Soto Suárez Tapia Tello Toledo Trujillo Urbina Valencia Valverde
Velásquez Vera Villanueva Villegas Zambrano Zárate Zegarra Zúñiga Acosta Acuña Alarcón
Alvarado Ascencio Atoche Ávila Ayala Barrera Barrios Bazán Becerra Bravo Bustamante
Caballero Calderón Camacho Canales Cano Carbajal Cerna Chacón Chirinos Cisneros Coronado
Cruzado Cuadros Dávila Durand Echevarría Escalante Espejo Falcón Gálvez Garay Gil Godoy
Granados Huerta Jáuregui Lara Lazarte Llerena Lucero Macedo Málaga Mallma Mendieta Mercado
Minaya Montenegro Morán Murillo Najarro Noriega Obregón Ojeda Oré Osorio Palacín Pinedo
Portocarrero Puma Quiñones Quiroga Rengifo Reátegui Rivas Rivero Salcedo Saldaña Samaniego
Sotelo Tafur Talavera Tineo Tuesta Ugarte Ulloa Urquizo Vallejos Vela Velarde Vilela Villar
Yáñez Ynga Zavala Zavaleta Huayta Illanes Inca Ñahui Chuquimango Chuquipoma Tacanga
Cusihuamán Pumacahua Sullca Huillca Taipe Anccasi Arotoma Auccapuma Cahuana Callo Ccasa
Ccopa Chalco Chipana Choquehuanca Coila Colque Cutipa Flores Huacho Huamaní Huarcaya
Janampa Limache Llamocca Mayta Pacompía Quicaño Quilca Sacsi Supo Tacuri Torres Uscamayta
Yauri Zea Alcántara Aranda Arévalo Bejarano Bermúdez Cornejo Chirinos Egúsquiza Guillén
Lapa Meza Ñique Oyola Peralta Pizarro Rázuri Rebaza Sifuentes Ubillús Valera
""".split()


def _dedupe(words: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(words))


MALE_GIVEN_NAMES = _dedupe(_MALE_GIVEN)
FEMALE_GIVEN_NAMES = _dedupe(_FEMALE_GIVEN)
GIVEN_NAMES = MALE_GIVEN_NAMES + FEMALE_GIVEN_NAMES
SURNAMES = _dedupe(_SURNAMES)

_FROM_PARKS = (
    "Taxi Lima Express SAC",
    "Flota Callao Norte",
    "Movilidad Sur EIRL",
    "Autos del Rímac",
    "Conductores Unidos SAC",
    "Park San Juan",
    "Flota Independencia",
    "Transportes Chorrillos",
    "Ate Movil SAC",
    "Red Taxi Arequipa",
    "Flota Trujillo Centro",
    "Park Los Olivos",
)
_EMAIL_DOMAINS = ("gmail.com", "hotmail.com", "outlook.com", "yahoo.es", "hotmail.es")
_EMAIL_DOMAIN_P = (0.62, 0.2, 0.08, 0.05, 0.05)
_EMAIL_DOMAIN_NO_TLD = tuple(d.split(".")[0] for d in _EMAIL_DOMAINS)

PHONE_PLACEHOLDERS = ("000000000", "999999999", "SIN DATO", "N/A", "-", "", "0", "NO TIENE")
DOCUMENT_PLACEHOLDERS = ("00000000", "SIN DATO", "N/A", "S/N", "-", "11111111", "99999999", "0")
EMAIL_INVALID_LITERALS = ("sin correo", "no tiene", "-", "N/A")

_ACCENTS = str.maketrans("áéíóúÁÉÍÓÚñÑüÜ", "aeiouAEIOUnNuU")

# --------------------------------------------------------------------------------------
# Mess probabilities at mess="default"; "hard" multiplies by 2.5, "clean" by 0.
# Per-table tuples are (cabinet, scout, migration, driver).
# --------------------------------------------------------------------------------------

MESS_BASE: dict[str, float | tuple[float, float, float, float]] = {
    # phone: exclusive corruption kinds, then a format variant for the rest
    "phone_null": (0.03, 0.02, 0.04, 0.01),
    "phone_empty": 0.01,
    "phone_placeholder": 0.02,
    "phone_bad_length": 0.02,
    "phone_typo": 0.01,
    "phone_landline": 0.01,
    "phone_format_variant": 0.40,
    # documents (drivers: license_number)
    "doc_null": (0.08, 0.04, 0.02, 0.01),
    "doc_empty": 0.01,
    "doc_placeholder": 0.02,
    "doc_typo_substitution": 0.015,
    "doc_typo_transposition": 0.01,
    "doc_format_variant": (0.06, 0.06, 0.06, 0.25),  # drivers: mostly the "Q" licence prefix
    # email (only cabinet_leads and drivers carry one; ~half of persons have one)
    "email_null": (0.10, 0.0, 0.0, 0.05),
    "email_empty": 0.02,
    "email_invalid": 0.02,
    "email_format_variant": 0.15,
    # plate (license_plate / car_plate; ~60% of persons have one)
    "plate_null": (0.25, 0.20, 0.05, 0.03),
    "plate_empty": 0.01,
    "plate_typo": 0.02,
    "plate_format_variant": 0.35,
    # names
    "name_strip_accents": 0.35,
    "name_upper": 0.35,
    "name_lower": 0.08,
    "name_mixed_case": 0.03,
    "name_swapped": (0.02, 0.06, 0.10, 0.35),  # surnames first (cabinet: fields swapped)
    "name_all_in_first_name": (0.02, 0.0, 0.0, 0.0),
    "name_drop_second_surname": 0.10,
    "name_drop_second_given": 0.12,
    "name_initial": 0.02,
    "name_spaces_punctuation": 0.05,
    "name_typo": 0.04,
    "name_null": 0.003,
    "name_empty": 0.002,
    # record level
    "record_wrecked": 0.005,  # every identifier corrupted at once
    "lead_no_identifiers": 0.015,  # leads with only a name (or nothing)
    "lead_dispatcher_phone": 0.015,  # leads carrying a dispatcher's phone
}
_P_CAP = 0.9

# Structural (not mess): population and behaviour.
_P_MALE = 0.8
_P_TWO_GIVEN = 0.55
_P_EMAIL = 0.5
_P_PLATE = 0.6
_CHANNEL_MIX = np.array([0.55, 0.30, 0.15])
_LEADS_PER_PERSON_P = (0.89, 0.10, 0.01)  # 1, 2, 3 lead records
_P_SECOND_SAME_CHANNEL = 0.25  # duplicate in the same channel, else another channel
_DRIVER_SHARE_FROM_LEADS = 0.7  # other drivers are driver_direct
_P_ACTIVE = 0.85
_P_RECENT = 0.7
_MILESTONES = (1, 5, 25)
_MILESTONE_AMOUNT_CENTS = {1: 3_000, 5: 10_000, 25: 35_000}
_P_CLAIM = 0.85
_P_CLAIM_NAMES_LEAD = 0.4
_DISPATCHER_PID_BASE = 99_000_000  # dispatcher "persons" live outside the person range
_MAX_PERSONS = 24_000_000  # bound of the plate bijection


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSpec:
    """What to generate. Same spec (with an explicit ``now``) -> identical tables."""

    leads: int = 3000  # total lead records across the 3 lead channels
    drivers: int | None = None  # driver records; default leads // 2
    seed: int = 42
    mess: str = "default"  # "clean" | "default" | "hard"
    days: int = 90  # lead timestamps spread over the last `days` days before `now`
    now: datetime | None = None  # reference time (tz-aware UTC); default: current hour


def create_raw_schema(conn: psycopg.Connection, schema: str = "raw", *, drop: bool = False) -> None:
    """Create the raw tables and ``ground_truth`` (if missing).

    ``drop=True`` drops them first, with CASCADE: views built on them (dbt staging) go too
    and are rebuilt by the next ``dbt build``.
    """
    _settle(conn)
    with conn.transaction():
        _create_tables(conn, schema, drop=drop)


def generate(conn: psycopg.Connection, spec: DemoSpec, schema: str = "raw") -> dict[str, int]:
    """Truncate and fill every raw table and ``ground_truth``; return row counts."""
    scale = _validate(spec)
    now = _now_seconds(spec.now)
    t0 = time.perf_counter()
    _settle(conn)
    tables = (*RAW_TABLES, GROUND_TRUTH_TABLE)
    drivers = spec.leads // 2 if spec.drivers is None else spec.drivers
    with conn.transaction():
        _create_tables(conn, schema, drop=False)
        conn.execute(
            sql.SQL("truncate table {}").format(sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables))
        )
        # Big loads go in without primary keys, rebuilt at the end: one sort beats
        # maintaining a text btree row by row (about 2x faster at a million rows).
        dropped = []
        if spec.leads + drivers >= _REBUILD_KEYS_ROWS:
            conn.execute("set local maintenance_work_mem = '256MB'")
            dropped = _drop_primary_keys(conn, schema, tables)
        # Tables are loaded by a worker thread while the next ones are built.
        with _Loader(conn, schema) as loader:
            for name, payload in _dataset(spec, scale, now):
                if name == "_meta":
                    meta = {"generator": "matcher.demo", "seed": spec.seed, "mess": spec.mess, **payload}
                    meta["now"] = datetime.fromtimestamp(now, UTC).isoformat()
                else:
                    loader.put(name, payload)
        _restore_primary_keys(conn, schema, dropped)
        _write_meta(conn, schema, meta)
    counts = {t: loader.counts.get(t, 0) for t in tables}
    log.info(
        "demo data generated in %.1fs: %s",
        time.perf_counter() - t0,
        ", ".join(f"{k}={v}" for k, v in counts.items()),
    )
    return counts


class _Loader:
    """COPY tables on a worker thread, in the order given, while the caller builds the next.

    Python builds and the server ingests at the same time (two cores). The connection is
    used by the worker only while the ``with`` block runs; errors surface on ``put`` or exit.
    """

    def __init__(self, conn: psycopg.Connection, schema: str) -> None:
        self._conn, self._schema = conn, schema
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="matcher-demo-copy", daemon=True)
        self.counts: dict[str, int] = {}

    def __enter__(self) -> _Loader:
        self._thread.start()
        return self

    def put(self, table: str, cols: list[_Col]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((table, cols))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:  # after a failure, keep draining so that put() never blocks
                try:
                    self.counts[item[0]] = _copy_table(self._conn, self._schema, *item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = exc

    def __exit__(self, exc_type, exc, tb) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc is None:
            raise self._error


def append_leads(
    conn: psycopg.Connection,
    n: int,
    *,
    seed: int,
    schema: str = "raw",
    spec: DemoSpec | None = None,
) -> dict[str, int]:
    """Add ``n`` new lead records on top of existing demo data (with ground truth).

    New keys continue after the highest existing ones. About half of the records are new
    persons; the rest are persons already present (drivers arriving as a lead, or a lead
    arriving through another channel). Timestamps fall in the last 12 hours before ``now``
    (``spec.now`` or the current hour). The population seed is read from the metadata that
    :func:`generate` stores on ``ground_truth`` (``spec.seed`` is the fallback).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    _settle(conn)
    meta = _read_meta(conn, schema)
    if spec is not None:
        _validate(spec)
    pop_seed = meta.get("seed", spec.seed if spec is not None else None)
    if pop_seed is None:
        raise ValueError(
            f"{schema}.{GROUND_TRUTH_TABLE} carries no matcher.demo metadata: "
            "run generate() first or pass spec"
        )
    if spec is not None and spec.seed != pop_seed:
        log.warning("append_leads: spec.seed differs from the stored population seed; using the stored one")
    mess = spec.mess if spec is not None else meta.get("mess", "default")
    scale = MESS_LEVELS[mess]
    now = _now_seconds(spec.now if spec is not None else None)
    n_dispatchers = int(meta.get("dispatchers", 0))
    t0 = time.perf_counter()
    with conn.transaction():
        state = _read_append_state(conn, schema, seed, n, meta)
        data, counts = _build_append(n, seed, int(pop_seed), scale, now, n_dispatchers, state)
        for t in (*LEAD_TABLES, GROUND_TRUTH_TABLE):
            _copy_table(conn, schema, t, data[t])
        if meta:
            _write_meta(conn, schema, {**meta, "persons": state["max_pid"] + counts["new_persons"]})
    log.info(
        "appended %d leads (%s) in %.2fs",
        n,
        ", ".join(f"{k}={v}" for k, v in counts.items()),
        time.perf_counter() - t0,
    )
    return counts


def edit_drivers(conn: psycopg.Connection, n: int, *, seed: int, schema: str = "raw") -> int:
    """Edit ``n`` existing drivers the way a driver's profile changes between two hourly runs: a
    new e-mail address (the old one with a tag before it; one made from the driver id where there
    was none or a blank one) and ``updated_at`` now. Who they are does not change, so the ground
    truth stays as it is. The drivers are a pseudo-random pick by ``seed``; returns how many
    rows changed (fewer than ``n`` when there are fewer drivers)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if n == 0:
        return 0
    _settle(conn)
    with conn.transaction():
        return conn.execute(
            sql.SQL(
                "update {drivers} d set email = %(tag)s || case when btrim(coalesce(d.email, '')) = ''"
                "   then d.driver_id || '@mail.pe' else d.email end,"
                " updated_at = now()"
                " where d.driver_id in (select driver_id from {drivers}"
                "   order by hashtextextended(driver_id, %(seed)s) limit %(n)s)"
            ).format(drivers=sql.Identifier(schema, "drivers")),
            {"tag": f"e{seed % 1000}.", "seed": seed, "n": n},
        ).rowcount


# --------------------------------------------------------------------------------------
# Database helpers
# --------------------------------------------------------------------------------------


def _settle(conn: psycopg.Connection) -> None:
    """Commit a transaction the caller left open, so that ours is a real top-level one.

    Inside the caller's own ``with conn.transaction():`` block psycopg forbids that: our work
    then becomes a savepoint and commits with the caller's transaction.
    """
    if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        try:
            conn.commit()
        except psycopg.ProgrammingError:
            log.debug("inside the caller's transaction block: not committing it")


def _create_tables(conn: psycopg.Connection, schema: str, *, drop: bool) -> None:
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    for table in (*RAW_TABLES, GROUND_TRUTH_TABLE):
        ident = sql.Identifier(schema, table)
        if drop:
            conn.execute(sql.SQL("drop table if exists {} cascade").format(ident))
        cols = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(typ)) for c, typ in _COLUMNS[table]
        )
        pk = sql.SQL(", ").join(sql.Identifier(c) for c in _PRIMARY_KEYS[table])
        conn.execute(
            sql.SQL("create table if not exists {} ({}, primary key ({}))").format(ident, cols, pk)
        )


def _drop_primary_keys(conn: psycopg.Connection, schema: str, tables: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """Drop the primary keys of ``tables`` that nothing references; return how to rebuild them."""
    rows = conn.execute(
        """
        select c.relname, con.conname, pg_get_constraintdef(con.oid)
        from pg_constraint con
        join pg_class c on c.oid = con.conrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = any(%s) and con.contype = 'p'
          and not exists (select 1 from pg_constraint f where f.confrelid = c.oid)
        order by c.relname
        """,
        (schema, list(tables)),
    ).fetchall()
    for table, name, _ in rows:
        conn.execute(
            sql.SQL("alter table {} drop constraint {}").format(sql.Identifier(schema, table), sql.Identifier(name))
        )
    return [(t, name, definition) for t, name, definition in rows]


def _restore_primary_keys(conn: psycopg.Connection, schema: str, dropped: list[tuple[str, str, str]]) -> None:
    for table, name, definition in dropped:
        # `definition` is pg_get_constraintdef() output, e.g. "PRIMARY KEY (driver_id, activity_date)"
        conn.execute(
            sql.SQL("alter table {} add constraint {} {}").format(
                sql.Identifier(schema, table), sql.Identifier(name), sql.SQL(definition)
            )
        )


def _write_meta(conn: psycopg.Connection, schema: str, meta: dict) -> None:
    """Generator metadata lives in the comment of ground_truth (the contract has no room for it)."""
    conn.execute(
        sql.SQL("comment on table {} is {}").format(
            sql.Identifier(schema, GROUND_TRUTH_TABLE), sql.Literal(json.dumps(meta, sort_keys=True))
        )
    )


def _read_meta(conn: psycopg.Connection, schema: str) -> dict:
    row = conn.execute(
        """
        select obj_description(c.oid, 'pg_class')
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s
        """,
        (schema, GROUND_TRUTH_TABLE),
    ).fetchone()
    if row is None:
        raise ValueError(f"{schema}.{GROUND_TRUTH_TABLE} does not exist: run generate() first")
    try:
        meta = json.loads(row[0]) if row[0] else {}
    except ValueError:
        meta = {}
    return meta if isinstance(meta, dict) and meta.get("generator") == "matcher.demo" else {}


# A column to load: text values (StringDType) and a null mask (None: no nulls).
_Col = tuple[np.ndarray, "np.ndarray | None"]
_CHUNK_ROWS = 50_000
_REBUILD_KEYS_ROWS = 100_000  # below this, loading with the primary key in place is as fast


def _escape_copy(values: np.ndarray) -> np.ndarray:
    for char, esc in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        if (np.strings.find(values, char) >= 0).any():
            values = np.strings.replace(values, char, esc)
    return values


def _copy_text(cols: list[_Col], *, escape: bool) -> str:
    line = None
    for values, nulls in cols:
        field = _escape_copy(values) if escape else values
        if nulls is not None and nulls.any():
            field = np.where(nulls, "\\N", field)
        line = field if line is None else np.strings.add(np.strings.add(line, "\t"), field)
    return "\n".join(line.tolist()) + "\n"


def _copy_table(conn: psycopg.Connection, schema: str, table: str, cols: list[_Col]) -> int:
    """COPY columns into a table in text format.

    Chunks are built while a writer thread sends the previous ones, so that Python and the
    server work at the same time.
    """
    names = [c for c, _ in _COLUMNS[table]]
    assert len(cols) == len(names), table
    n = len(cols[0][0]) if cols else 0
    if n == 0:
        return 0
    stmt = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with conn.cursor() as cur:
        with cur.copy(stmt, writer=QueuedLibpqWriter(cur)) as copy:
            for start in range(0, n, _CHUNK_ROWS):
                stop = start + _CHUNK_ROWS
                chunk = [(v[start:stop], None if m is None else m[start:stop]) for v, m in cols]
                text = _copy_text(chunk, escape=False)
                rows = len(chunk[0][0])
                # Generated values never hold separators; verify cheaply, escape only if needed.
                if (
                    text.count("\t") != rows * (len(cols) - 1)
                    or text.count("\n") != rows
                    or text.count("\\") != sum(int(m.sum()) for _, m in chunk if m is not None)
                    or "\r" in text
                ):
                    text = _copy_text(chunk, escape=True)
                copy.write(text)
    return n


# --------------------------------------------------------------------------------------
# Small vectorized helpers
# --------------------------------------------------------------------------------------

_U64_MASK = (1 << 64) - 1


def _validate(spec: DemoSpec) -> float:
    if spec.mess not in MESS_LEVELS:
        raise ValueError(f"mess must be one of {sorted(MESS_LEVELS)}, got {spec.mess!r}")
    if spec.leads < 0 or (spec.drivers is not None and spec.drivers < 0):
        raise ValueError("leads and drivers must be >= 0")
    if spec.days <= 0:
        raise ValueError("days must be > 0")
    drivers = spec.leads // 2 if spec.drivers is None else spec.drivers
    if spec.leads + drivers >= _MAX_PERSONS:
        raise ValueError(f"at most {_MAX_PERSONS - 1} person records are supported")
    return MESS_LEVELS[spec.mess]


def _now_seconds(now: datetime | None) -> int:
    if now is None:
        return int(datetime.now(UTC).timestamp()) // _HOUR * _HOUR
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return int(now.timestamp())


def _splitmix_py(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _U64_MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64_MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64_MASK
    return x ^ (x >> 31)


def _key(seed: int, salt: str) -> np.uint64:
    return np.uint64(_splitmix_py((seed & _U64_MASK) ^ (zlib.crc32(salt.encode()) << 32)))


def _mix64(z: np.ndarray) -> np.ndarray:
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash(pids: np.ndarray, seed: int, salt: str) -> np.ndarray:
    return _mix64(pids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + _key(seed, salt))


def _uniform(pids: np.ndarray, seed: int, salt: str) -> np.ndarray:
    return (_hash(pids, seed, salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _permute(x: np.ndarray, n: int, seed: int, salt: str) -> np.ndarray:
    """Keyed bijection of [0, n): a 4-round Feistel network with cycle walking."""
    bits = max(2, int(n - 1).bit_length())
    bits += bits % 2
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    keys = [_key(seed, f"{salt}:{r}") for r in range(4)]

    def rounds(v: np.ndarray) -> np.ndarray:
        left, right = v >> half, v & mask
        for k in keys:
            left, right = right, left ^ (_mix64(right ^ k) & mask)
        return (left << half) | right

    y = rounds(x.astype(np.uint64))
    bad = np.flatnonzero(y >= np.uint64(n))
    while bad.size:
        y[bad] = rounds(y[bad])
        bad = bad[y[bad] >= np.uint64(n)]
    return y.astype(np.int64)


def _zipf_cdf(n: int, offset: float, power: float) -> np.ndarray:
    w = 1.0 / (np.arange(n) + offset) ** power
    return np.cumsum(w) / w.sum()


def _pick_cdf(u: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _s(values) -> np.ndarray:
    return np.asarray(values, dtype=_S)


_DIGITS4 = ((np.arange(10_000)[:, None] // np.array([1000, 100, 10, 1])) % 10 + 48).astype(np.uint8)


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as zero-padded ASCII bytes (4-digit lookups, no formatting)."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    groups = (width + 3) // 4
    mat = np.empty((v.size, groups * 4), dtype=np.uint8)
    for g in range(groups):
        mat[:, g * 4 : g * 4 + 4] = _DIGITS4[(v // 10 ** (4 * (groups - 1 - g))) % 10_000]
    return np.ascontiguousarray(mat[:, groups * 4 - width :]).view(f"S{width}").reshape(-1)


def _num(values: np.ndarray, width: int = 0) -> np.ndarray:
    """Non-negative integers as text, zero-padded to ``width`` (0: no padding)."""
    v = np.asarray(values, dtype=np.int64)
    if width:
        return _digits(v, width).astype(_S)
    if v.size == 0:
        return np.zeros(0, dtype=_S)
    out = np.strings.lstrip(_digits(v, len(str(int(v.max())))), b"0")
    out[v == 0] = b"0"
    return out.astype(_S)


def _keys(prefix: str, start: int, n: int) -> np.ndarray:
    return np.strings.add(prefix, _num(np.arange(start, start + n), _KEY_DIGITS))


def _person_ids(pids: np.ndarray) -> np.ndarray:
    return np.strings.add(_PERSON_PREFIX, _num(pids, _KEY_DIGITS))


def _day_table(day: np.ndarray) -> tuple[np.ndarray, int]:
    """ISO dates (bytes) for the day numbers spanned by ``day``, and the first day number."""
    if day.size == 0:
        return np.zeros(0, dtype="S10"), 0
    first = int(day.min())
    days = np.arange(first, int(day.max()) + 1).astype("datetime64[D]")
    return np.datetime_as_string(days).astype("S10"), first


_SECONDS = np.arange(_DAY)
_TIME_OF_DAY = functools.reduce(  # "HH:MM:SS+00" for every second of a day (bytes)
    np.strings.add,
    (_digits(_SECONDS // 3600, 2), b":", _digits(_SECONDS // 60 % 60, 2), b":", _digits(_SECONDS % 60, 2), b"+00"),
)


def _dates(day: np.ndarray) -> np.ndarray:
    table, first = _day_table(day)
    return table[day - first].astype(_S)


def _ts(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds as 'YYYY-MM-DD HH:MM:SS+00' (lookup tables: datetime_as_string is slow)."""
    day = seconds // _DAY
    table, first = _day_table(day)
    return np.strings.add(np.strings.add(table[day - first], b" "), _TIME_OF_DAY[seconds % _DAY]).astype(_S)


def _cat(*parts) -> np.ndarray:
    out = parts[0]
    for p in parts[1:]:
        out = np.strings.add(out, p)
    return out


def _scaled(name: str, scale: float, table: np.ndarray) -> np.ndarray | float:
    base = MESS_BASE[name]
    if isinstance(base, tuple):
        return np.minimum(np.asarray(base)[table] * scale, _P_CAP)
    return min(base * scale, _P_CAP)


def _draw_kinds(rng, table: np.ndarray, scale: float, names: list[str]) -> np.ndarray:
    """Exclusive mess kinds: index into ``names``, or len(names) for "no corruption"."""
    n = len(table)
    u = rng.random(n)
    cum = np.zeros(n)
    kind = np.full(n, len(names), dtype=np.int8)
    for i, name in enumerate(names):
        cum = cum + _scaled(name, scale, table)
        hit = (u < cum) & (kind == len(names))
        kind[hit] = i
    return kind


# --------------------------------------------------------------------------------------
# Persons: a pure function of (seed, person number)
# --------------------------------------------------------------------------------------

_GIVEN_CDF_M = _zipf_cdf(len(MALE_GIVEN_NAMES), 3.0, 0.9)
_GIVEN_CDF_F = _zipf_cdf(len(FEMALE_GIVEN_NAMES), 3.0, 0.9)
_SURNAME_CDF = _zipf_cdf(len(SURNAMES), 5.0, 1.0)
_PLATES_OLD = 26**3 * 1000  # "ABC-123"
_PLATES_NEW = 26 * 10 * 26 * 1000  # "A1B-123"
_ALPHA = _s(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
_DIGIT = _s(list("0123456789"))


def _person_attrs(seed: int, pids: np.ndarray) -> dict[str, np.ndarray]:
    pids = np.asarray(pids, dtype=np.int64)
    male = _uniform(pids, seed, "sex") < _P_MALE
    n_male = len(MALE_GIVEN_NAMES)

    def given(salt: str) -> np.ndarray:
        u = _uniform(pids, seed, salt)
        return np.where(male, _pick_cdf(u, _GIVEN_CDF_M), n_male + _pick_cdf(u, _GIVEN_CDF_F))

    g1 = given("g1")
    g2 = given("g2")
    same = g2 == g1
    n_female = len(FEMALE_GIVEN_NAMES)
    g2[same] = np.where(male[same], (g2[same] + 1) % n_male, n_male + (g2[same] - n_male + 1) % n_female)
    g2[_uniform(pids, seed, "n_given") >= _P_TWO_GIVEN] = -1
    s1 = _pick_cdf(_uniform(pids, seed, "s1"), _SURNAME_CDF)
    s2 = _pick_cdf(_uniform(pids, seed, "s2"), _SURNAME_CDF)

    dni = 10_000_000 + _permute(pids, 70_000_000, seed, "dni")
    phone = 900_000_000 + _permute(pids, 100_000_000, seed, "phone")
    has_email = _uniform(pids, seed, "has_email") < _P_EMAIL
    email_pattern = (_hash(pids, seed, "email_pattern") % np.uint64(4)).astype(np.int8)
    email_domain = _pick_cdf(_uniform(pids, seed, "email_domain"), np.cumsum(_EMAIL_DOMAIN_P))
    has_plate = _uniform(pids, seed, "has_plate") < _P_PLATE
    return {
        "pid": pids, "seed": seed, "g1": g1, "g2": g2, "s1": s1, "s2": s2, "dni": dni, "phone": phone,
        "has_email": has_email, "email_pattern": email_pattern, "email_domain": email_domain,
        "has_plate": has_plate,
    }  # fmt: skip


def _email_numbers(seed: int, pids: np.ndarray) -> np.ndarray:
    return _permute(pids, 1 << 24, seed, "email_number")


def _plate_codes(seed: int, pids: np.ndarray) -> np.ndarray:
    return _permute(pids, _PLATES_OLD + _PLATES_NEW, seed, "plate")


def _dispatcher_phones(seed: int, k: np.ndarray) -> np.ndarray:
    return 900_000_000 + _permute(_DISPATCHER_PID_BASE + np.asarray(k, dtype=np.int64), 100_000_000, seed, "phone")


def _plate_parts(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Letters part ("ABC" or "A1B") and digits part ("123") of a plate code."""
    digits = _num(code % 1000, 3)
    head = code // 1000
    old = code < _PLATES_OLD
    h_new = np.maximum(code - _PLATES_OLD, 0) // 1000
    letters_old = _cat(_ALPHA[head // 676 % 26], _ALPHA[head // 26 % 26], _ALPHA[head % 26])
    letters_new = _cat(_ALPHA[h_new // 260 % 26], _DIGIT[h_new // 26 % 10], _ALPHA[h_new % 26])
    return np.where(old, letters_old, letters_new), digits


# --------------------------------------------------------------------------------------
# Rendering person records with mess
# --------------------------------------------------------------------------------------


def _name_forms(names: tuple[str, ...], prefix: str = "", initials: bool = False) -> np.ndarray:
    """Flat array [accent(0 keep, 1 strip)][case(0 title, 1 upper, 2 lower)][name] + [""].

    The trailing "" is what index -1 (no such name) picks.
    """
    forms = []
    for strip in (False, True):
        base = [n.translate(_ACCENTS) if strip else n for n in names]
        forms += [base, [b.upper() for b in base], [b.lower() for b in base]]
    flat = [prefix + (x[0] + "." if initials else x) for f in forms for x in f]
    return _s([*flat, ""])


_GIVEN_FORMS = _name_forms(GIVEN_NAMES)
_GIVEN_FORMS_SPACED = _name_forms(GIVEN_NAMES, " ")
_GIVEN_INITIALS = _name_forms(GIVEN_NAMES, initials=True)
_SURNAME_FORMS = _name_forms(SURNAMES)
_SURNAME_FORMS_SPACED = _name_forms(SURNAMES, " ")
_GIVEN_ASCII = _s([n.translate(_ACCENTS).lower() for n in GIVEN_NAMES])
_SURNAME_ASCII = _s([n.translate(_ACCENTS).lower() for n in SURNAMES])
_GIVEN_ASCII_INITIAL = _s([n.translate(_ACCENTS).lower()[0] for n in GIVEN_NAMES])

_LOWER = "abcdefghijklmnopqrstuvwxyz"


def _typo(s: str, r: np.ndarray) -> str:
    """One-character edit (substitution, deletion, insertion, transposition) on a letter."""
    letters = [i for i, ch in enumerate(s) if ch.isalpha()]
    if len(letters) < 2:
        return s
    i = letters[int(r[0] * len(letters))]
    op = int(r[1] * 4)
    ch = _LOWER[int(r[2] * 26)]
    if s[i].isupper():
        ch = ch.upper()
    if op == 0:
        if ch.lower() == s[i].lower():
            ch = _LOWER[(_LOWER.index(ch.lower()) + 1) % 26]
            ch = ch.upper() if s[i].isupper() else ch
        return s[:i] + ch + s[i + 1 :]
    if op == 1:
        return s[:i] + s[i + 1 :]
    if op == 2:
        return s[:i] + ch + s[i:]
    j = i + 1 if i + 1 < len(s) and s[i + 1].isalpha() and s[i + 1] != s[i] else i - 1
    if j < 0 or not s[j].isalpha() or s[j] == s[i]:
        return s[:i] + s[i + 1 :]
    a, b = min(i, j), max(i, j)
    return s[:a] + s[b] + s[a] + s[b + 1 :]


def _spaces_punct(s: str, r: np.ndarray) -> str:
    op = int(r[0] * 6)
    if op == 0:
        return s.replace(" ", "  ", 1) if " " in s else s + " "
    if op == 1:
        return " " + s + "  "
    if op == 2:
        return s + "."
    if op == 3:
        return s.replace(" ", ", ", 1) if " " in s else s + ","
    if op == 4:
        return s.replace(" ", " - ", 1) if " " in s else s
    return s.replace(" ", "   ") if " " in s else " " + s


def _apply(values: np.ndarray, idx: np.ndarray, fn, rng, k: int = 3) -> None:
    """Apply a per-string Python function to a (small) subset, in place."""
    if idx.size == 0:
        return
    r = rng.random((idx.size, k))
    values[idx] = _s([fn(s, r[i]) for i, s in enumerate(values[idx].tolist())])


def _styled(out: np.ndarray, idx: np.ndarray, u: np.ndarray, styles) -> None:
    """Rewrite ``out[idx]`` by style: ``styles`` is ((upper bound of u, build(positions)), ...)."""
    lo = 0.0
    for hi, build in styles:
        pick = idx[(u >= lo) & (u < hi)]
        if pick.size:
            out[pick] = build(pick)
        lo = hi


def _choice_strings(rng, options: tuple[str, ...], n: int) -> np.ndarray:
    return _s(options)[rng.integers(0, len(options), n)]


def _render_names(rng, a: dict, table: np.ndarray, scale: float, wrecked: np.ndarray):
    n = len(table)
    u = rng.random((n, 8))
    g1, g2, s1, s2 = a["g1"], a["g2"].copy(), a["s1"], a["s2"].copy()
    g2[u[:, 0] < _scaled("name_drop_second_given", scale, table)] = -1
    s2[u[:, 1] < _scaled("name_drop_second_surname", scale, table)] = -1
    strip = (u[:, 2] < _scaled("name_strip_accents", scale, table)).astype(np.int64)
    # case mode: 0 title, 1 upper, 2 lower, 3 mixed (per token)
    p_up, p_low = _scaled("name_upper", scale, table), _scaled("name_lower", scale, table)
    p_mix = _scaled("name_mixed_case", scale, table)
    mode = np.zeros(n, dtype=np.int64)
    mode[u[:, 3] < p_up + p_low + p_mix] = 3
    mode[u[:, 3] < p_up + p_low] = 2
    mode[u[:, 3] < p_up] = 1
    tok_case = np.where(mode[:, None] == 3, rng.integers(0, 3, (n, 4)), mode[:, None])
    ng, ns = len(GIVEN_NAMES), len(SURNAMES)

    def tok(forms, size, idx, col):
        return forms[np.where(idx >= 0, (strip * 3 + tok_case[:, col]) * size + idx, len(forms) - 1)]

    initial = u[:, 4] < _scaled("name_initial", scale, table)
    given = np.strings.add(
        np.where(initial, tok(_GIVEN_INITIALS, ng, g1, 0), tok(_GIVEN_FORMS, ng, g1, 0)),
        tok(_GIVEN_FORMS_SPACED, ng, g2, 1),
    )
    surnames = np.strings.add(tok(_SURNAME_FORMS, ns, s1, 2), tok(_SURNAME_FORMS_SPACED, ns, s2, 3))
    swapped = u[:, 5] < _scaled("name_swapped", scale, table)
    # cabinet_leads: first_name / last_name (swapped fields, or everything in first_name)
    first = np.where(swapped, surnames, given)
    last = np.where(swapped, given, surnames)
    full = _cat(first, " ", last)
    all_in_first = u[:, 6] < _scaled("name_all_in_first_name", scale, table)
    first[all_in_first] = full[all_in_first]
    last_null = all_in_first.copy()

    typo = np.flatnonzero((u[:, 7] < _scaled("name_typo", scale, table)) | wrecked)
    punct = np.flatnonzero(rng.random(n) < _scaled("name_spaces_punctuation", scale, table))
    cab = table == _CAB
    typo_last = rng.random(n) < 0.5
    for idx_set, fn, k in ((typo, _typo, 3), (punct, _spaces_punct, 1)):
        _apply(full, idx_set[~cab[idx_set]], fn, rng, k)
        c = idx_set[cab[idx_set]]
        _apply(first, c[~typo_last[c] | all_in_first[c]], fn, rng, k)
        _apply(last, c[typo_last[c] & ~all_in_first[c]], fn, rng, k)
    # missing names
    v = rng.random(n)
    p_null, p_empty = _scaled("name_null", scale, table), _scaled("name_empty", scale, table)
    null = v < p_null
    empty = (v >= p_null) & (v < p_null + p_empty)
    for arr in (full, first, last):
        arr[empty] = ""
    return (full, null), (first, null), (last, null | last_null)


_PHONE_KINDS = ["phone_null", "phone_empty", "phone_placeholder", "phone_bad_length", "phone_typo", "phone_landline"]
P_NULL, P_EMPTY, P_PLACEHOLDER, P_BADLEN, P_TYPO, P_LANDLINE, P_OK, P_DISPATCHER = range(8)
_DOC_KINDS = ["doc_null", "doc_empty", "doc_placeholder", "doc_typo_substitution", "doc_typo_transposition"]
D_NULL, D_EMPTY, D_PLACEHOLDER, D_TYPO, D_SWAP, D_OK = range(6)
_EMAIL_KINDS = ["email_null", "email_empty", "email_invalid"]
_PLATE_KINDS = ["plate_null", "plate_empty", "plate_typo"]
X_NULL, X_EMPTY, X_BAD, X_OK = range(4)

# phone format variants of a 9-digit mobile "987654321" (weights sum to 1)
_PHONE_VARIANT_W = np.array([0.15, 0.06, 0.06, 0.18, 0.1, 0.05, 0.15, 0.1, 0.05, 0.05, 0.05])


def _format_phones(rng, digits: np.ndarray, variant_p: float | np.ndarray) -> np.ndarray:
    """Format 9-digit mobiles; a share ``variant_p`` gets a non-canonical format."""
    s = _num(digits)
    n = len(s)
    use = rng.random(n) < variant_p
    var = _pick_cdf(rng.random(n), np.cumsum(_PHONE_VARIANT_W))
    out = s.copy()
    a, b, c = np.strings.slice(s, 0, 3), np.strings.slice(s, 3, 6), np.strings.slice(s, 6, 9)
    builders = (
        lambda i: _cat("+51 ", a[i], " ", b[i], " ", c[i]),
        lambda i: np.strings.add("0051", s[i]),
        lambda i: _cat("51-", a[i], "-", b[i], "-", c[i]),
        lambda i: _cat(a[i], " ", b[i], " ", c[i]),
        lambda i: _cat(a[i], "-", b[i], "-", c[i]),
        lambda i: _cat(a[i], ".", b[i], ".", c[i]),
        lambda i: np.strings.add("+51", s[i]),
        lambda i: np.strings.add("51", s[i]),
        lambda i: _cat(" ", s[i], " "),
        lambda i: np.strings.add("+51-", s[i]),
        lambda i: np.strings.add("(+51) ", s[i]),
    )
    for v, build in enumerate(builders):
        idx = np.flatnonzero(use & (var == v))
        if idx.size:
            out[idx] = build(idx)
    return out


def _render_phones(rng, phone, kind, dispatcher_phone, table, scale):
    n = len(kind)
    digits = phone.copy()
    pos = rng.integers(0, 8, n)  # never the leading 9
    p10 = 10 ** pos
    d = (digits // p10) % 10
    nd = (d + rng.integers(1, 10, n)) % 10
    typo = kind == P_TYPO
    digits[typo] += ((nd - d) * p10)[typo]
    disp = kind == P_DISPATCHER
    digits[disp] = dispatcher_phone[disp]
    out = _format_phones(rng, digits, _scaled("phone_format_variant", scale, table))
    # invalid length: drop or duplicate one digit
    bad = np.flatnonzero(kind == P_BADLEN)
    if bad.size:
        hi, lo, pw = phone[bad] // (p10[bad] * 10), phone[bad] % p10[bad], p10[bad]
        longer = rng.random(bad.size) < 0.35
        val = np.where(longer, (hi * 10 + d[bad]) * 10 * pw + d[bad] * pw + lo, hi * pw + lo)
        out[bad] = _num(val)
    land = np.flatnonzero(kind == P_LANDLINE)
    if land.size:
        num7 = np.full(n, "", dtype=_S)
        num7[land] = _num(rng.integers(2_000_000, 8_000_000, land.size))
        _styled(out, land, rng.random(land.size), (
            (0.5, lambda i: _cat("(01) ", np.strings.slice(num7[i], 0, 3), "-", np.strings.slice(num7[i], 3, 7))),
            (0.8, lambda i: np.strings.add("01 ", num7[i])),
            (1.0, lambda i: np.strings.add("01", num7[i])),
        ))  # fmt: skip
    ph = np.flatnonzero(kind == P_PLACEHOLDER)
    out[ph] = _choice_strings(rng, PHONE_PLACEHOLDERS, ph.size)
    out[kind == P_EMPTY] = ""
    return out, kind == P_NULL


def _render_documents(rng, dni, kind, table, scale):
    n = len(kind)
    value = dni.copy()
    pos = rng.integers(0, 8, n)
    p10 = 10 ** pos
    d = (value // p10) % 10
    nd = (d + rng.integers(1, 10, n)) % 10
    sub = kind == D_TYPO
    value[sub] += ((nd - d) * p10)[sub]
    # adjacent transposition of two different digits (fall back to a substitution)
    swap = np.flatnonzero(kind == D_SWAP)
    if swap.size:
        v = value[swap]
        p = np.minimum(pos[swap], 6)
        lo_w, hi_w = 10 ** p, 10 ** (p + 1)
        dl, dh = (v // lo_w) % 10, (v // hi_w) % 10
        same = dl == dh
        swapped = v + (dh - dl) * lo_w + (dl - dh) * hi_w
        off = (nd[swap] - d[swap]) % 10  # 1..9: a substitution when both digits agree
        value[swap] = np.where(same, v + (((dl + off) % 10) - dl) * lo_w, swapped)
    s = _num(value, 8)
    out = s.copy()
    use = (kind == D_OK) & (rng.random(n) < _scaled("doc_format_variant", scale, table))
    u = rng.random(n)
    drv = table == _DRV
    a, b, c = np.strings.slice(s, 0, 2), np.strings.slice(s, 2, 5), np.strings.slice(s, 5, 8)
    lead_idx = np.flatnonzero(use & ~drv)
    _styled(out, lead_idx, u[lead_idx], (
        (0.3, lambda i: _cat(a[i], " ", b[i], " ", c[i])),
        (0.5, lambda i: _cat(a[i], ".", b[i], ".", c[i])),
        (0.7, lambda i: _cat(a[i], "-", b[i], "-", c[i])),
        (1.0, lambda i: _cat(" ", s[i], " ")),
    ))  # fmt: skip
    driver_idx = np.flatnonzero(use & drv)
    _styled(out, driver_idx, u[driver_idx], (  # Peruvian licences: "Q" + DNI
        (0.7, lambda i: np.strings.add("Q", s[i])),
        (0.82, lambda i: np.strings.add("q", s[i])),
        (0.9, lambda i: np.strings.add("Q-", s[i])),
        (0.96, lambda i: np.strings.add("q ", s[i])),
        (1.0, lambda i: _cat(" ", s[i], " ")),
    ))  # fmt: skip
    ph = np.flatnonzero(kind == D_PLACEHOLDER)
    out[ph] = _choice_strings(rng, DOCUMENT_PLACEHOLDERS, ph.size)
    out[kind == D_EMPTY] = ""
    return out, kind == D_NULL


def _render_emails(rng, a, kind, table, scale):
    n = len(kind)
    out = np.full(n, "", dtype=_S)
    idx = np.flatnonzero(kind != X_NULL)  # only records that show an email
    g1 = a["g1"][idx]
    g = _GIVEN_ASCII[g1]
    sname = _SURNAME_ASCII[a["s1"][idx]]
    num = _num(_email_numbers(a["seed"], a["pid"][idx]))
    pat = a["email_pattern"][idx]
    sep = np.where(pat == 0, ".", np.where(pat == 3, "_", "")).astype(_S)
    g = np.where(pat == 2, _GIVEN_ASCII_INITIAL[g1], g)
    local = _cat(g, sep, sname, num)
    domain_idx = a["email_domain"][idx]
    email = _cat(local, "@", _s(_EMAIL_DOMAINS)[domain_idx])
    k = kind[idx]
    domains, bare_domains = _s(_EMAIL_DOMAINS)[domain_idx], _s(_EMAIL_DOMAIN_NO_TLD)[domain_idx]
    ok = np.flatnonzero((k == X_OK) & (rng.random(idx.size) < _scaled("email_format_variant", scale, table[idx])))
    _styled(email, ok, rng.random(ok.size), (
        (0.35, lambda i: np.strings.upper(email[i])),
        (0.6, lambda i: _cat(np.strings.upper(np.strings.slice(email[i], 0, 1)), np.strings.slice(email[i], 1, None))),
        (1.0, lambda i: _cat(" ", email[i], " ")),
    ))  # fmt: skip
    bad = np.flatnonzero(k == X_BAD)
    _styled(email, bad, rng.random(bad.size), (
        (0.3, lambda i: np.strings.add(local[i], "@")),
        (0.5, lambda i: _cat(local[i], "@", bare_domains[i])),
        (0.65, lambda i: _cat(local[i], ".", domains[i])),
        (1.0, lambda i: _choice_strings(rng, EMAIL_INVALID_LITERALS, i.size)),
    ))  # fmt: skip
    email[k == X_EMPTY] = ""
    out[idx] = email
    return out, kind == X_NULL


_PLATE_LOOKALIKE = {"O": "0", "0": "O", "I": "1", "1": "I", "B": "8", "8": "B", "S": "5", "5": "S"}


def _plate_typo(s: str, r: np.ndarray) -> str:
    chars = [i for i, ch in enumerate(s) if ch.isalnum()]
    i = chars[int(r[0] * len(chars))]
    ch = s[i]
    if r[1] < 0.3 and ch in _PLATE_LOOKALIKE:
        new = _PLATE_LOOKALIKE[ch]
    elif ch.isdigit():
        new = str((int(ch) + 1 + int(r[2] * 9)) % 10)
    else:
        new = _LOWER[(_LOWER.index(ch.lower()) + 1 + int(r[2] * 25)) % 26].upper()
    return s[:i] + new + s[i + 1 :]


def _render_plates(rng, a, kind, table, scale):
    n = len(kind)
    out = np.full(n, "", dtype=_S)
    idx = np.flatnonzero(kind != X_NULL)  # only records that show a plate
    letters, digits = _plate_parts(_plate_codes(a["seed"], a["pid"][idx]))
    plate = _cat(letters, "-", digits)
    k = kind[idx]
    _apply(plate, np.flatnonzero(k == X_BAD), _plate_typo, rng)
    use = np.flatnonzero((k == X_OK) & (rng.random(idx.size) < _scaled("plate_format_variant", scale, table[idx])))
    _styled(plate, use, rng.random(use.size), (
        (0.35, lambda i: _cat(letters[i], digits[i])),
        (0.55, lambda i: _cat(np.strings.lower(letters[i]), " ", digits[i])),
        (0.75, lambda i: _cat(np.strings.lower(letters[i]), "-", digits[i])),
        (0.9, lambda i: _cat(letters[i], " ", digits[i])),
        (1.0, lambda i: _cat(" ", letters[i], "-", digits[i], " ")),
    ))  # fmt: skip
    plate[k == X_EMPTY] = ""
    out[idx] = plate
    return out, kind == X_NULL


def _render_records(
    rng, pop_seed: int, pids: np.ndarray, table: np.ndarray, scale: float, dispatcher: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Render person records. ``dispatcher``: dispatcher index per record, -1 for none."""
    n = len(pids)
    a = _person_attrs(pop_seed, pids)
    lead = table != _DRV
    wrecked = rng.random(n) < _scaled("record_wrecked", scale, table)
    no_ids = lead & ~wrecked & (rng.random(n) < _scaled("lead_no_identifiers", scale, table))
    no_name = no_ids & (rng.random(n) < 0.3)
    has_disp = (dispatcher >= 0) & ~no_ids & ~wrecked

    phone_kind = _draw_kinds(rng, table, scale, _PHONE_KINDS)
    doc_kind = _draw_kinds(rng, table, scale, _DOC_KINDS)
    email_kind = _draw_kinds(rng, table, scale, _EMAIL_KINDS)
    plate_kind = _draw_kinds(rng, table, scale, _PLATE_KINDS)
    phone_kind[has_disp] = P_DISPATCHER
    # Resolvability: a normal record keeps its phone or its document intact.
    lost = (phone_kind != P_OK) & (doc_kind != D_OK) & ~wrecked & ~no_ids
    restore_phone = lost & (rng.random(n) < 0.5) & ~has_disp
    phone_kind[restore_phone] = P_OK
    doc_kind[lost & ~restore_phone] = D_OK
    # Wrecked: everything damaged at once.
    r = rng.integers(0, 3, n)
    phone_kind[wrecked] = np.array([P_BADLEN, P_TYPO, P_PLACEHOLDER])[r[wrecked]]
    doc_kind[wrecked] = np.array([D_TYPO, D_SWAP, D_PLACEHOLDER])[r[wrecked]]
    email_kind[wrecked] = X_BAD
    plate_kind[wrecked] = X_BAD
    # No identifiers: only a name (or nothing).
    r = rng.integers(0, 3, n)
    phone_kind[no_ids] = np.array([P_NULL, P_EMPTY, P_PLACEHOLDER])[r[no_ids]]
    doc_kind[no_ids] = np.array([D_NULL, D_EMPTY, D_PLACEHOLDER])[r[no_ids]]
    email_kind[no_ids] = X_NULL
    plate_kind[no_ids] = X_NULL
    # Attributes the person does not have are simply absent.
    email_kind[~a["has_email"] | (table == _SCOUT) | (table == _MIG)] = X_NULL
    plate_kind[~a["has_plate"]] = X_NULL

    disp_phone = np.where(has_disp, _dispatcher_phones(pop_seed, np.maximum(dispatcher, 0)), 0)
    full, first, last = _render_names(rng, a, table, scale, wrecked)
    for arr, nulls in (full, first, last):
        nulls |= no_name
    return {
        "full_name": full,
        "first_name": first,
        "last_name": last,
        "phone": _render_phones(rng, a["phone"], phone_kind, disp_phone, table, scale),
        "document": _render_documents(rng, a["dni"], doc_kind, table, scale),
        "email": _render_emails(rng, a, email_kind, table, scale),
        "plate": _render_plates(rng, a, plate_kind, table, scale),
    }


def _scout_ids(rng, n_scouts: int, size: int) -> np.ndarray:
    cdf = _zipf_cdf(n_scouts, 2.0, 1.0)
    return np.strings.add("SC", _num(_pick_cdf(rng.random(size), cdf) + 1, 4))


def _lead_table_columns(
    rng, code: int, keys: np.ndarray, times: np.ndarray, rec: dict, scout_ids: np.ndarray
) -> list[_Col]:
    """Columns of one lead table from its rendered records (in key order)."""
    ts = (_ts(times), None)
    identifiers = [rec["phone"], rec["document"]]
    if code == _CAB:
        return [(keys, None), ts, rec["first_name"], rec["last_name"], *identifiers, rec["email"], rec["plate"]]
    if code == _SCOUT:
        return [(keys, None), ts, (scout_ids, None), rec["full_name"], *identifiers, rec["plate"]]
    parks = _s(_FROM_PARKS)[_pick_cdf(rng.random(len(keys)), _zipf_cdf(len(_FROM_PARKS), 1.5, 1.0))]
    return [(keys, None), ts, (parks, None), rec["full_name"], *identifiers, rec["plate"]]


def _record_keys(
    tables: tuple[str, ...], table: np.ndarray, starts: dict[str, int]
) -> tuple[np.ndarray, list[slice]]:
    """Keys for records sorted by table code, numbered from ``starts`` per table."""
    bounds = np.searchsorted(table, np.arange(len(tables) + 1))
    slices = [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(len(tables))]
    keys = [
        _keys(_KEY_PREFIX[t], starts.get(t, 0) + 1, sl.stop - sl.start) for t, sl in zip(tables, slices, strict=True)
    ]
    return (np.concatenate(keys) if keys else np.zeros(0, dtype=_S)), slices


def _ground_truth(tables: tuple[str, ...], slices: list[slice], keys: np.ndarray, pids: np.ndarray) -> list[_Col]:
    counts = [sl.stop - sl.start for sl in slices]
    return [(np.repeat(_s(tables), counts), None), (keys, None), (_person_ids(pids), None)]


# --------------------------------------------------------------------------------------
# Full dataset
# --------------------------------------------------------------------------------------


def _leads_per_person(rng, total: int) -> np.ndarray:
    """Lead-record counts per person (1, 2 or 3) summing exactly to ``total``."""
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    k = rng.choice(np.array([1, 2, 3]), size=total, p=_LEADS_PER_PERSON_P)
    cs = np.cumsum(k)
    persons = int(np.searchsorted(cs, total)) + 1
    k = k[:persons].copy()
    k[-1] -= int(cs[persons - 1]) - total
    return k


def _lead_records(rng, k: np.ndarray, now: int, first_time: np.ndarray):
    """Expand per-person lead counts into records: person index, channel, time (sorted)."""
    persons = len(k)
    person = np.repeat(np.arange(persons), k)
    start = np.cumsum(k) - k
    j = np.arange(len(person)) - start[person]
    n = len(person)
    channel = np.empty(n, dtype=np.int64)
    times = np.empty(n, dtype=np.int64)
    first = j == 0
    channel[first] = _pick_cdf(rng.random(persons), np.cumsum(_CHANNEL_MIX))
    times[first] = first_time
    same = rng.random(n) < _P_SECOND_SAME_CHANNEL
    u = rng.random(n)
    delay_cross = rng.exponential(7 * _DAY, n)
    delay_dup = rng.exponential(6 * _HOUR, n)
    for level in (1, 2):
        idx = np.flatnonzero(j == level)
        if idx.size == 0:
            continue
        prev_ch = channel[idx - 1]
        other1, other2 = (prev_ch + 1) % 3, (prev_ch + 2) % 3
        w1 = _CHANNEL_MIX[other1] / (_CHANNEL_MIX[other1] + _CHANNEL_MIX[other2])
        cross = np.where(u[idx] < w1, other1, other2)
        channel[idx] = np.where(same[idx], prev_ch, cross)
        prev_t = times[idx - 1]
        t = prev_t + np.where(same[idx], delay_dup[idx], delay_cross[idx]).astype(np.int64)
        late = t >= now
        t[late] = prev_t[late] + ((now - prev_t[late]) * rng.random(int(late.sum()))).astype(np.int64)
        times[idx] = t
    return person, j, channel, times


def _assign_dispatchers(rng, channel: np.ndarray, scale: float) -> tuple[np.ndarray, int]:
    """Dispatcher index per lead record (-1 none): a few phones shared by 20-200 records."""
    n = len(channel)
    dispatcher = np.full(n, -1, dtype=np.int64)
    if scale == 0 or n < 100:
        return dispatcher, 0
    target = max(20, int(round(n * _scaled("lead_dispatcher_phone", scale, channel))))
    target = min(target, n // 5)
    sizes: list[int] = []
    while sum(sizes) < target:
        sizes.append(int(rng.integers(20, 201)))
    sizes[-1] -= sum(sizes) - target
    if sizes[-1] < 20 and len(sizes) > 1:
        sizes[-2] += sizes.pop()
    # Scouts register people with their own phone more often than the cabinet does.
    weight = np.where(channel == _SCOUT, 5.0, np.where(channel == _CAB, 1.0, 0.3))
    # weighted sampling without replacement: the smallest exponential keys / weight
    rank = rng.exponential(size=n) / weight
    chosen = np.argpartition(rank, target - 1)[:target]
    chosen = chosen[np.argsort(rank[chosen], kind="stable")]
    dispatcher[chosen] = np.repeat(np.arange(len(sizes)), sizes)
    return dispatcher, len(sizes)


def _dataset(spec: DemoSpec, scale: float, now: int) -> Iterator[tuple[str, Any]]:
    """Yield ("_meta", dict) then (table, columns) for every table, each as soon as it is built."""
    rng = np.random.default_rng(spec.seed)
    n_leads = spec.leads
    n_drivers = spec.leads // 2 if spec.drivers is None else spec.drivers

    # --- persons and their lead records
    k = _leads_per_person(rng, n_leads)
    p_lead = len(k)
    first_time = now - 2 - (rng.random(p_lead) * spec.days * _DAY).astype(np.int64)
    person, _, channel, ltime = _lead_records(rng, k, now, first_time)

    n_conv = min(int(round(_DRIVER_SHARE_FROM_LEADS * n_drivers)), p_lead)
    n_direct = n_drivers - n_conv
    conv = np.sort(rng.choice(p_lead, size=n_conv, replace=False)) if n_conv else np.zeros(0, np.int64)
    n_persons = p_lead + n_direct
    pid_of = rng.permutation(n_persons).astype(np.int64) + 1  # person number, 1-based

    # --- drivers
    t_first = first_time[conv]
    delay = _HOUR + rng.gamma(2.0, 2.5 * _DAY, n_conv).astype(np.int64)
    hired_conv = t_first + delay
    late = hired_conv >= now
    room = now - 1 - t_first[late]  # hired between the first lead and now
    hired_conv[late] = t_first[late] + 1 + (room * rng.uniform(0.05, 0.95, int(late.sum()))).astype(np.int64)
    hired_direct = now - (rng.random(n_direct) * 2 * spec.days * _DAY).astype(np.int64) - 1
    d_person = np.concatenate([conv, p_lead + np.arange(n_direct)])
    hired = np.concatenate([hired_conv, hired_direct])
    unchanged = rng.random(n_drivers) < 0.3
    updated = hired + np.where(unchanged, 0, ((now - hired) * rng.random(n_drivers)).astype(np.int64))

    # --- all person records, in their final order: by table, keys increasing with time
    table = np.concatenate([channel, np.full(n_drivers, _DRV)])
    rec_person = np.concatenate([person, d_person])
    rec_time = np.concatenate([ltime, hired])
    dispatcher = np.full(len(table), -1, dtype=np.int64)
    dispatcher[:n_leads], n_dispatchers = _assign_dispatchers(rng, channel, scale)
    order = np.lexsort((rec_time, table))
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    table, rec_person, rec_time, dispatcher = table[order], rec_person[order], rec_time[order], dispatcher[order]
    pids = pid_of[rec_person]
    n_scouts = 40 + n_leads // 200
    scout_ids = _scout_ids(rng, n_scouts, len(table))
    # the dispatcher of a scout registration is that scout's own phone
    disp_scout = (dispatcher >= 0) & (table == _SCOUT)
    scout_ids[disp_scout] = np.strings.add("SC", _num(dispatcher[disp_scout] % n_scouts + 1, 4))
    keys, slices = _record_keys(PERSON_TABLES, table, {})

    yield "_meta", {"dispatchers": n_dispatchers, "persons": n_persons}
    yield GROUND_TRUTH_TABLE, _ground_truth(PERSON_TABLES, slices, keys, pids)
    for code, name in enumerate(LEAD_TABLES):
        sl = slices[code]
        rec = _render_records(rng, spec.seed, pids[sl], table[sl], scale, dispatcher[sl])
        yield name, _lead_table_columns(rng, code, keys[sl], rec_time[sl], rec, scout_ids[sl])
    dsl = slices[_DRV]
    driver_idx = order[dsl] - n_leads  # driver rank -> index into d_person / hired / updated
    driver_keys = keys[dsl]
    rec = _render_records(rng, spec.seed, pids[dsl], table[dsl], scale, dispatcher[dsl])
    yield "drivers", [
        (driver_keys, None),
        (_ts(hired[driver_idx]), None),
        rec["full_name"],
        rec["phone"],
        rec["document"],
        rec["email"],
        rec["plate"],
        (_ts(updated[driver_idx]), None),
    ]

    # --- activity and claims, drivers in key order
    lead_start = np.cumsum(k) - k  # first lead record (original index) of each lead person
    lead_key_of = lambda record: keys[position[record]]  # noqa: E731
    yield from _activity_and_claims(
        rng, now, hired[driver_idx], d_person[driver_idx], p_lead, k, lead_start, lead_key_of, driver_keys
    )


def _activity_and_claims(rng, now, hired, d_person, p_lead, k, lead_start, lead_key_of, driver_keys):
    n = len(hired)
    today = now // _DAY
    hire_day = hired // _DAY
    span = today - hire_day + 1
    active = rng.random(n) < _P_ACTIVE
    n_days = np.where(active, np.minimum(1 + rng.poisson(5, n), span), 0)
    drv = np.repeat(np.arange(n), n_days)
    day = hire_day[drv] + (rng.random(len(drv)) * span[drv]).astype(np.int64)
    recent = np.flatnonzero(active & (rng.random(n) < _P_RECENT))
    recent_day = np.maximum(hire_day[recent], today - rng.integers(0, 7, recent.size))
    key = np.concatenate([drv * 100_000 + day, recent * 100_000 + recent_day])
    key.sort()
    key = key[np.concatenate([[True], key[1:] != key[:-1]])] if key.size else key
    drv, day = key // 100_000, key % 100_000
    trips = 1 + rng.poisson(6, len(drv))
    activity = [
        (np.repeat(driver_keys, np.bincount(drv, minlength=n)), None),
        (_dates(day), None),
        (_num(trips), None),
    ]

    # milestones: first day the cumulative trips reach 1, 5, 25
    cum = np.cumsum(trips)
    g_start = np.searchsorted(drv, np.arange(n), side="left")
    g_end = np.searchsorted(drv, np.arange(n), side="right")
    base = np.where(g_start > 0, cum[np.maximum(g_start - 1, 0)], 0)
    # a claim follows its milestone by up to two days, and milestones are claimed in order
    c_drv, c_ms, c_at = [], [], []
    last = np.zeros(n, dtype=np.int64)
    for m in _MILESTONES:
        hit = np.searchsorted(cum, base + m, side="left")
        ok = np.flatnonzero((hit < g_end) & (g_end > g_start))
        lo = np.maximum(np.maximum(day[hit[ok]] * _DAY, hired[ok]), last[ok]) + 1
        hi = np.maximum(np.minimum(lo + 48 * _HOUR, now), lo)
        at = np.minimum(lo + ((hi - lo) * rng.random(ok.size)).astype(np.int64), now)
        last[ok] = at
        c_drv.append(ok)
        c_ms.append(np.full(ok.size, m))
        c_at.append(at)
    c_drv, c_ms, claimed = np.concatenate(c_drv), np.concatenate(c_ms), np.concatenate(c_at)
    keep = rng.random(c_drv.size) < _P_CLAIM
    c_drv, c_ms, claimed = c_drv[keep], c_ms[keep], claimed[keep]
    m_cnt = c_drv.size
    # lead named only sometimes: the person's first lead, or another of their leads
    person = d_person[c_drv]
    has_lead = person < p_lead
    names_lead = has_lead & (rng.random(m_cnt) < _P_CLAIM_NAMES_LEAD)
    pl = np.minimum(person, max(p_lead - 1, 0))
    which = np.where(rng.random(m_cnt) < 0.8, 0, (rng.random(m_cnt) * (k[pl] if p_lead else 1)).astype(np.int64))
    lead_key = np.full(m_cnt, "", dtype=_S)
    if p_lead:
        lead_key[names_lead] = lead_key_of((lead_start[pl] + which)[names_lead])
    cents = np.zeros(m_cnt, dtype=np.int64)
    for milestone, amount_cents in _MILESTONE_AMOUNT_CENTS.items():
        cents[c_ms == milestone] = amount_cents
    cents = np.where(rng.random(m_cnt) < 0.1, cents * 6 // 5, cents)
    amount = _cat(_num(cents // 100), ".", _num(cents % 100, 2))
    recent_claim = claimed >= now - 7 * _DAY
    u = rng.random(m_cnt)
    status = np.where(
        recent_claim,
        np.where(u < 0.6, "pending", np.where(u < 0.9, "paid", "rejected")),
        np.where(u < 0.8, "paid", np.where(u < 0.9, "pending", "rejected")),
    ).astype(_S)
    order = np.lexsort((c_ms, c_drv, claimed))
    claims = [
        (_keys(_KEY_PREFIX["claims"], 1, m_cnt), None),
        (driver_keys[c_drv[order]], None),
        (lead_key[order], ~names_lead[order]),
        (_num(c_ms[order]), None),
        (amount[order], None),
        (_ts(claimed[order]), None),
        (status[order], None),
    ]
    yield "driver_activity", activity
    yield "claims", claims


# --------------------------------------------------------------------------------------
# Incremental append
# --------------------------------------------------------------------------------------


def _read_append_state(conn: psycopg.Connection, schema: str, seed: int, n: int, meta: dict) -> dict:
    gt = sql.Identifier(schema, GROUND_TRUTH_TABLE)
    pattern = f"^{_PERSON_PREFIX}[0-9]{{{_KEY_DIGITS}}}$"
    state: dict = {"max_key": {}}
    for table in LEAD_TABLES:
        key_col = sql.Identifier(_COLUMNS[table][0][0])
        # fixed-width keys: the text max is the numeric max, and the primary key serves it
        row = conn.execute(
            sql.SQL("select max({}) from {} where {} ~ %s").format(key_col, sql.Identifier(schema, table), key_col),
            (f"^{_KEY_PREFIX[table]}[0-9]{{{_KEY_DIGITS}}}$",),
        ).fetchone()
        state["max_key"][table] = int(row[0][len(_KEY_PREFIX[table]) :]) if row[0] else 0
    if "persons" in meta:
        max_pid = int(meta["persons"])
    else:
        query = sql.SQL("select max(true_entity_id) from {} where true_entity_id ~ %s").format(gt)
        row = conn.execute(query, (pattern,)).fetchone()
        max_pid = int(row[0][len(_PERSON_PREFIX) :]) if row[0] else 0
    state["max_pid"] = max_pid
    # Existing persons: a random sample of person numbers, looked up in the ground truth.
    rng = np.random.default_rng([seed, 0x5A3D1E])
    size = min(max_pid, 4 * n + 100)
    candidates = rng.choice(max_pid, size=size, replace=False) + 1 if size else np.zeros(0, np.int64)
    rows = conn.execute(
        sql.SQL(
            """
            select g.true_entity_id, bool_or(g.source_table = 'drivers'), bool_or(g.source_table <> 'drivers')
            from {} g
            where g.true_entity_id = any(%s::text[])
            group by g.true_entity_id
            """
        ).format(gt),
        (_person_ids(candidates).tolist(),),
    ).fetchall()
    roles = {int(r[0][len(_PERSON_PREFIX) :]): (r[1], r[2]) for r in rows}
    is_driver = np.array([roles.get(int(p), (False, False))[0] for p in candidates], dtype=bool)
    has_lead = np.array([roles.get(int(p), (False, False))[1] for p in candidates], dtype=bool)
    state["drivers"] = candidates[is_driver]
    state["leads"] = candidates[has_lead & ~is_driver]
    return state


def _build_append(n, seed, pop_seed, scale, now, n_dispatchers, state):
    rng = np.random.default_rng([seed, pop_seed, 0xA99E4D])
    # who: ~55% new persons, ~25% existing drivers arriving as a lead, ~20% existing leads
    who = _pick_cdf(rng.random(n), np.cumsum([0.55, 0.25, 0.20]))
    n_drv = min(int((who == 1).sum()), len(state["drivers"]))
    n_old = min(int((who == 2).sum()), len(state["leads"]))
    existing = np.concatenate([state["drivers"][:n_drv], state["leads"][:n_old]])
    k = _leads_per_person(rng, n - existing.size)
    new_pids = state["max_pid"] + 1 + np.arange(len(k), dtype=np.int64)
    if new_pids.size and new_pids[-1] >= _MAX_PERSONS:
        raise ValueError("person numbers exhausted")
    first_time = now - (rng.random(len(k)) * 12 * _HOUR).astype(np.int64) - 1
    person, _, channel, times = _lead_records(rng, k, now, first_time)
    pids = np.concatenate([new_pids[person], existing])
    channel = np.concatenate([channel, _pick_cdf(rng.random(existing.size), np.cumsum(_CHANNEL_MIX))])
    times = np.concatenate([times, now - (rng.random(existing.size) * 12 * _HOUR).astype(np.int64) - 1])
    dispatcher = np.full(n, -1, dtype=np.int64)
    if n_dispatchers and scale:
        use = rng.random(n) < _scaled("lead_dispatcher_phone", scale, channel)
        dispatcher[use] = rng.integers(0, n_dispatchers, int(use.sum()))
    order = np.lexsort((times, channel))
    pids, channel, times, dispatcher = pids[order], channel[order], times[order], dispatcher[order]
    scout_ids = _scout_ids(rng, 40, n)
    keys, slices = _record_keys(LEAD_TABLES, channel, state["max_key"])
    out: dict = {}
    counts: dict[str, int] = {}
    for code, name in enumerate(LEAD_TABLES):
        sl = slices[code]
        rec = _render_records(rng, pop_seed, pids[sl], channel[sl], scale, dispatcher[sl])
        out[name] = _lead_table_columns(rng, code, keys[sl], times[sl], rec, scout_ids[sl])
        counts[name] = sl.stop - sl.start
    out[GROUND_TRUTH_TABLE] = _ground_truth(LEAD_TABLES, slices, keys, pids)
    counts[GROUND_TRUTH_TABLE] = n
    counts["new_persons"] = len(k)
    counts["existing_persons"] = int(existing.size)
    return out, counts
