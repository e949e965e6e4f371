"""The COPY codecs the matcher reads and writes with, against a real Postgres, and the Python
mirror of the blocking key types kept equal to the dbt macro."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from matcher import copyio
from matcher.explain import BLOCKING_KEY_TYPES, blocking_keys
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("chunk_bytes,max_rows", [(32 << 20, None), (1000, None), (26, None), (32 << 20, 10_000)])
def test_int64_round_trip_keeps_every_value_and_the_order(conn, chunk_bytes, max_rows):
    # through COPY decoded in chunks of every size, and as one array value per column
    rng = np.random.default_rng(3)
    a = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 10_000, dtype=np.int64)
    b = np.concatenate([[0, -1, 1, np.iinfo(np.int64).min, np.iinfo(np.int64).max], a[5:]])
    conn.execute("create temp table pairs (i bigint, a bigint, b bigint)")
    copyio.write_int64(conn, sql.Identifier("pairs"), ["i", "a", "b"], [np.arange(len(a)), a, b])
    assert conn.execute("select count(*), sum(a::numeric), sum(b::numeric) from pairs").fetchone() == (
        len(a), int(a.astype(object).sum()), int(b.astype(object).sum()))
    back = copyio.read_int64(conn, sql.SQL("select a, b from pairs order by i"), 2, chunk_bytes=chunk_bytes,
                             max_rows=max_rows)
    assert back.shape == (len(a), 2)
    assert np.array_equal(back[:, 0], a) and np.array_equal(back[:, 1], b)


def test_mixed_numeric_columns_round_trip_exactly(conn):
    rng = np.random.default_rng(5)
    n = 5_000
    cols = {
        "i2": np.concatenate([[np.iinfo(np.int16).min, np.iinfo(np.int16).max, -1], rng.integers(-999, 999, n - 3)]).astype(np.int16),
        "i4": rng.integers(np.iinfo(np.int32).min, np.iinfo(np.int32).max, n, dtype=np.int32),
        "i8": rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64),
        "f4": np.concatenate([[np.nan, np.inf, -0.0], rng.standard_normal(n - 3)]).astype(np.float32),
        "f8": rng.standard_normal(n),
    }
    conn.execute("create temp table mixed (i serial, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision)")
    copyio.write_columns(conn, sql.Identifier("mixed"), cols)
    rows = conn.execute("select i2, i4, i8, f4, f8 from mixed order by i").fetchall()
    assert len(rows) == n
    for j, name in enumerate(cols):
        back = np.array([r[j] for r in rows], dtype=cols[name].dtype)
        assert np.array_equal(back, cols[name], equal_nan=name.startswith("f")), name
    assert conn.execute("select count(*) from mixed where f4 = 'NaN'").fetchone()[0] == 1


def test_write_columns_refuses_other_types_and_ragged_columns(conn):
    conn.execute("create temp table t (a bigint, b bigint)")
    with pytest.raises(TypeError, match="binary COPY columns"):
        copyio.write_columns(conn, sql.Identifier("t"), {"a": np.array([1, 2], dtype=np.uint64), "b": np.array([1, 2])})
    with pytest.raises(ValueError, match="different lengths"):
        copyio.write_columns(conn, sql.Identifier("t"), {"a": np.array([1, 2]), "b": np.array([1])})
    assert conn.execute("select count(*) from t").fetchone()[0] == 0


@pytest.mark.parametrize("max_rows", [None, 5])
def test_int64_read_of_nothing_is_an_empty_array(conn, max_rows):
    back = copyio.read_int64(conn, sql.SQL("select 1::bigint, 2::bigint where false"), 2, max_rows=max_rows)
    assert back.shape == (0, 2)


@pytest.mark.parametrize("max_rows", [None, 5])
@pytest.mark.parametrize("query", ["select 1::integer, 2::bigint", "select null::bigint, 2::bigint"])
def test_int64_read_refuses_what_is_not_two_non_null_bigints(conn, query, max_rows):
    with pytest.raises(ValueError, match="non-null bigint"):
        copyio.read_int64(conn, sql.SQL(query), 2, max_rows=max_rows)


def test_int64_read_over_its_bound_still_returns_every_row(conn):
    # the bound only chooses the way: a query returning more rows than it said loses none
    back = copyio.read_int64(conn, sql.SQL("select g::bigint, -g::bigint from generate_series(1, 50) g"), 2, max_rows=3)
    assert np.array_equal(back[:, 0], np.arange(1, 51)) and np.array_equal(back[:, 1], -np.arange(1, 51))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
                max_size=30))
def test_text_read_returns_exactly_the_stored_strings(database, values):
    with database.connect(autocommit=True) as c:
        c.execute("create temp table t (i int, v text)")
        with c.cursor() as cur, cur.copy("copy t (i, v) from stdin") as cp:
            for i, v in enumerate(values):
                cp.write_row((i, v))
        assert copyio.read_text(c, sql.SQL("select v from t order by i")) == values
        # as one value (a value holding a newline sends it back to COPY)
        assert copyio.read_text(c, sql.SQL("select v from t order by i"), rows=len(values)) == values


@pytest.mark.parametrize("rows", [None, 2])
def test_text_read_of_other_types_gives_their_text(conn, rows):
    assert copyio.read_text(conn, sql.SQL("select v from (values (1, 42), (2, null)) t(i, v) order by i"), rows=rows) == [
        "42", ""]


@pytest.mark.parametrize("rows", [None, 3, 2])
def test_text_read_gives_empty_strings_for_nulls(conn, rows):
    # rows=2 is a wrong count: the read is done again row by row, nothing is lost
    assert copyio.read_text(conn, sql.SQL("select v from (values (1, 'a'), (2, null), (3, 'b\\c')) t(i, v) order by i"),
                            rows=rows) == ["a", "", "b\\c"]


def test_blocking_key_types_mirror_the_dbt_macro():
    macro = (ROOT / "macros" / "blocking_key_types.sql").read_text()
    listed = re.search(r"return\(\[(.*?)\]\)", macro, re.S).group(1)
    assert tuple(re.findall(r"'([a-z_]+)'", listed)) == BLOCKING_KEY_TYPES
    assert blocking_keys(0) == []
    assert blocking_keys(1) == ["phone"]
    assert blocking_keys(0b1000010) == ["document", "name_pair"]
