"""Bulk reads and writes through COPY, decoded with numpy instead of row by row in Python.

- `read_int64`: non-null int8 columns. Up to `VALUE_READ_MAX_ROWS` rows (when the caller knows a
  bound), each column as one value of its 8-byte big-endian values (`string_agg(int8send(...))`):
  one message for the whole column, decoded by numpy. Beyond it, or without a bound, `COPY (query) TO STDOUT
  (FORMAT BINARY)` decoded as one fixed-width numpy record array (26 bytes a row for two
  columns). A COPY sends one message per row, and reading 11.7M of them through psycopg's
  Python loop cost more than the query itself (1M leads, every pair: 6.8-7.0 s into the
  matcher, 1.7 s into psql, 1.7-2.1 s as one value a column).
- `write_int64` / `write_columns`: the reverse, one binary COPY of fixed-width numeric columns
  (smallint, integer, bigint, real, double precision) laid out by numpy.
- `read_text`: one text column. With a row bound up to `VALUE_READ_MAX_ROWS`, as one
  `string_agg` value split on newlines (used only when the split gives one value per row: no
  value held a newline); otherwise through COPY, split on newlines, COPY's text escapes undone
  only when a value needs it (normalized identifiers and names never do).
"""
from __future__ import annotations

import re

import numpy as np
import psycopg
from psycopg import sql

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"


# Rows read as one value per column at most: a value is at most 1 GB (8 bytes a bigint, ~20 bytes
# a row of the text columns read here).
VALUE_READ_MAX_ROWS = 40_000_000
_INT8_OID = 20
# what Postgres raises for a value past 1 GB ("invalid memory alloc request size", "array size
# exceeds the maximum allowed")
_TOO_LARGE = (psycopg.errors.ProgramLimitExceeded, psycopg.errors.InternalError_)


def _read_int64_values(conn: psycopg.Connection, query: sql.Composable, ncols: int, params=None) -> np.ndarray:
    """Every column of `query` aggregated into one value of its big-endian 8-byte values
    (`string_agg(int8send(...))`, one pass, so every column is in the same row order), decoded
    by numpy straight into the result, each wire value let go once copied (11.6M pairs: 93 MB a
    column; array_send's form takes 12 bytes a value and 1.5 times as long)."""
    names = [sql.Identifier(f"c{i}") for i in range(ncols)]
    subquery = sql.SQL("({}) as q ({})").format(query, sql.SQL(", ").join(names))
    with conn.cursor(binary=True) as cur:
        # bigint columns only (int8send would take an integer through an implicit cast)
        cur.execute(sql.SQL("select * from {} limit 0").format(subquery), params)
        if [c.type_code for c in cur.description] != [_INT8_OID] * ncols:
            raise ValueError("rows are not all non-null bigint columns")
        cur.execute(sql.SQL("select count(*), {} from {}").format(
            sql.SQL(", ").join(sql.SQL("string_agg(int8send({}), ''::bytea)").format(n) for n in names), subquery),
            params)
        # one column at a time out of the result (fetchone would copy every column at once)
        result = cur.pgresult
        rows = int.from_bytes(result.get_value(0, 0), "big", signed=True)
        out = np.empty((rows, ncols), dtype=np.int64)
        for i in range(ncols):
            data = result.get_value(0, i + 1) or b""
            if len(data) != 8 * rows:  # string_agg leaves nulls out
                raise ValueError("rows are not all non-null bigint columns")
            out[:, i] = np.frombuffer(data, dtype=">i8")
            data = None
    return out


def _row_dtype(ncols: int) -> np.dtype:
    fields = [("n", ">i2")]
    for i in range(ncols):
        fields += [(f"len{i}", ">i4"), (f"c{i}", ">i8")]
    return np.dtype(fields)


def _copy_out(conn: psycopg.Connection, statement: sql.Composable, params=None) -> bytes:
    chunks = []
    with conn.cursor() as cur, cur.copy(statement, params) as cp:
        for chunk in cp:
            chunks.append(bytes(chunk))
    return b"".join(chunks)


def read_int64(conn: psycopg.Connection, query: sql.Composable, ncols: int, params=None,
               chunk_bytes: int = 32 << 20, max_rows: int | None = None) -> np.ndarray:
    """Rows of `query` (ncols non-null bigint columns) as an (n, ncols) int64 array.

    `max_rows`: a bound on the rows the query returns, if the caller knows one; up to
    VALUE_READ_MAX_ROWS they are read as one value per column. Otherwise through COPY,
    decoded every `chunk_bytes`, so memory holds the result plus one chunk, never the whole wire
    copy of a table of tens of millions of pairs.
    """
    if max_rows is not None and max_rows <= VALUE_READ_MAX_ROWS:
        try:
            with conn.transaction():  # a savepoint inside a caller's transaction
                return _read_int64_values(conn, query, ncols, params)
        except _TOO_LARGE:
            pass  # more rows than the bound said, past what one value holds: read them through COPY
    dtype = _row_dtype(ncols)
    parts: list[np.ndarray] = []
    buf = bytearray()
    header_done = False

    def decode(final: bool) -> None:
        nonlocal buf
        body = buf
        if final:
            if bytes(body[-2:]) != TRAILER:
                raise ValueError("binary COPY stream without its trailer")
            body = body[:-2]
        n = len(body) // dtype.itemsize
        if final and len(body) % dtype.itemsize:
            raise ValueError("binary COPY rows are not all non-null bigint columns")
        if n:
            rows = np.frombuffer(bytes(body[:n * dtype.itemsize]), dtype=dtype)
            if (rows["n"] != ncols).any() or any((rows[f"len{i}"] != 8).any() for i in range(ncols)):
                raise ValueError("binary COPY rows are not all non-null bigint columns")
            part = np.empty((n, ncols), dtype=np.int64)
            for i in range(ncols):
                part[:, i] = rows[f"c{i}"]
            parts.append(part)
        buf = bytearray(body[n * dtype.itemsize:])

    statement = sql.SQL("copy ({}) to stdout (format binary)").format(query)
    with conn.cursor() as cur, cur.copy(statement, params) as cp:
        for chunk in cp:
            buf += chunk
            if not header_done and len(buf) >= 19:
                if not bytes(buf).startswith(SIGNATURE):
                    raise ValueError("not a binary COPY stream")
                ext = int.from_bytes(buf[15:19], "big")
                if len(buf) < 19 + ext:
                    continue
                del buf[:19 + ext]
                header_done = True
            if header_done and len(buf) >= chunk_bytes:
                decode(final=False)
    if not header_done:
        raise ValueError("not a binary COPY stream")
    decode(final=True)
    return np.concatenate(parts) if parts else np.empty((0, ncols), dtype=np.int64)


def write_int64(conn: psycopg.Connection, table: sql.Composable, columns: list[str], values: list[np.ndarray]) -> None:
    """Append rows (one int64 array per column, equal lengths) to `table` with one binary COPY."""
    write_columns(conn, table, {c: np.asarray(v, dtype=np.int64) for c, v in zip(columns, values)})


# numpy kinds that are one fixed-width Postgres type each, in COPY's big-endian wire form
_WIRE = {np.dtype(np.int16): ">i2", np.dtype(np.int32): ">i4", np.dtype(np.int64): ">i8",
         np.dtype(np.float32): ">f4", np.dtype(np.float64): ">f8"}


def write_columns(conn: psycopg.Connection, table: sql.Composable, columns: dict[str, np.ndarray]) -> None:
    """Append rows to `table` with one binary COPY, one numpy array per column (equal lengths):
    int16/int32/int64/float32/float64 for smallint/integer/bigint/real/double precision columns.
    No nulls (a float NaN is stored as NaN); the rows are laid out by numpy, not by Python."""
    arrays = [np.asarray(v) for v in columns.values()]
    if any(a.dtype not in _WIRE for a in arrays):
        raise TypeError(f"binary COPY columns must be one of {sorted(map(str, _WIRE))}, got {[str(a.dtype) for a in arrays]}")
    n = len(arrays[0]) if arrays else 0
    if any(len(a) != n for a in arrays):
        raise ValueError("binary COPY columns of different lengths")
    fields = [("n", ">i2")]
    for i, a in enumerate(arrays):
        fields += [(f"len{i}", ">i4"), (f"c{i}", _WIRE[a.dtype])]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["n"] = len(arrays)
    for i, a in enumerate(arrays):
        rows[f"len{i}"] = a.dtype.itemsize
        rows[f"c{i}"] = a
    statement = sql.SQL("copy {} ({}) from stdin (format binary)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    with conn.cursor() as cur, cur.copy(statement) as cp:
        cp.write(HEADER + rows.tobytes() + TRAILER)


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")


def _unescape(value: str) -> str:
    def one(m: re.Match) -> str:
        s = m.group(1)
        if s[0] == "x" and len(s) > 1:
            return chr(int(s[1:], 16))
        if s[0].isdigit():
            return chr(int(s, 8))
        return _ESCAPES.get(s, s)
    return _ESCAPE_RE.sub(one, value)


def read_text(conn: psycopg.Connection, query: sql.Composable, params=None, rows: int | None = None) -> list[str]:
    """The single text column of `query`, null read as ''. `rows`: exactly how many rows the
    query returns, if the caller knows; up to VALUE_READ_MAX_ROWS they are read as one value,
    in the order the query returns them (a count that does not match sends the read to COPY)."""
    if rows is not None and rows <= VALUE_READ_MAX_ROWS:
        if rows == 0:
            return []
        try:
            with conn.transaction(), conn.cursor(binary=True) as cur:
                (joined,) = cur.execute(sql.SQL("select string_agg(coalesce(q.c0::text, ''), E'\\n') from ({}) as q (c0)").format(query),
                                        params).fetchone()
        except _TOO_LARGE:
            joined = None  # past what one value holds: read it through COPY
        values = joined.split("\n") if joined is not None else []
        if len(values) == rows:
            return values
        # a value held a newline (or the bound was wrong): read it row by row
    data = _copy_out(conn, sql.SQL("copy ({}) to stdout").format(query), params).decode()
    if not data:
        return []
    values = data[:-1].split("\n")  # every row ends with a newline
    if "\\" in data:
        values = ["" if v == "\\N" else (_unescape(v) if "\\" in v else v) for v in values]
    return values
