"""Dense codes for 64-bit record ids: `np.unique(values, return_inverse=True)`, faster.

A run reads its candidate pairs as record ids (random 64-bit values, md5-derived) and needs
each pair as two positions into the sorted array of the records involved. numpy's
`np.unique(..., return_inverse=True)` argsorts every value and scatters the codes back: at 1M
leads, 23M values of 1.5M distinct ones, that is 9-11 s. Here only the values are sorted (to
find the distinct ones, 1.7 s), and each value's position is then looked up in an
open-addressing hash table of the distinct ones, vectorized by rounds of linear probing
(under a second): the same result in about 4.5 s.
"""
from __future__ import annotations

import numpy as np

# Fibonacci hashing: the top bits of value * 2^64 / golden ratio spread any set of keys,
# sequential ones included, over the table
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _slots(keys: np.ndarray, bits: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ((keys.view(np.uint64) * _MIX) >> np.uint64(64 - bits)).astype(np.intp)


def distinct_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct values of an int64 array, sorted (np.unique without its hash path, which is
    slower than a sort for tens of millions of values)."""
    ordered = np.sort(np.ascontiguousarray(values, dtype=np.int64).ravel())
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def dense_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values sorted, each value's position among them as int32, in `values`' shape):
    what `np.unique(values, return_inverse=True)` returns, for int64 values."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    flat = values.ravel()
    distinct = distinct_sorted(flat)
    if len(distinct) > np.iinfo(np.int32).max:
        raise ValueError(f"{len(distinct):,} distinct values do not fit int32 codes")
    # a table at most a quarter full: few values need a second probe
    bits = max(4, (4 * len(distinct)).bit_length())
    mask = (1 << bits) - 1
    table_key = np.zeros(1 << bits, dtype=np.int64)
    table_pos = np.full(1 << bits, -1, dtype=np.int32)
    # place the distinct values: per round, every value still unplaced claims its slot; of
    # several claiming one free slot one wins, the others (and those finding it taken) move on
    todo = np.arange(len(distinct), dtype=np.int32)
    slot = _slots(distinct, bits)
    while todo.size:
        free = table_pos[slot] < 0
        table_pos[slot[free]] = todo[free]
        won = np.zeros(todo.size, dtype=bool)
        won[free] = table_pos[slot[free]] == todo[free]
        table_key[slot[won]] = distinct[todo[won]]
        todo, slot = todo[~won], (slot[~won] + 1) & mask
    # look every value up along the same probe sequence; each is in the table, so each stops
    inverse = np.empty(flat.size, dtype=np.int32)
    slot = _slots(flat, bits)
    rest = np.arange(flat.size, dtype=np.intp)
    while rest.size:
        found = table_key[slot] == flat[rest]
        inverse[rest[found]] = table_pos[slot[found]]
        rest, slot = rest[~found], (slot[~found] + 1) & mask
    return distinct, inverse.reshape(values.shape)
