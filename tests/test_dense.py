"""matcher.dense: the runner's record positions must be exactly np.unique's (sorted distinct
values, each value's index among them), whatever the values: duplicates, extremes, keys that
share a hash slot and must be found by probing past each other. And the matcher process keeps
numpy's huge-page advice off unless asked."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from matcher.dense import _slots, dense_index, distinct_sorted

INT64 = np.iinfo(np.int64)


def _same_as_numpy(values: np.ndarray) -> None:
    distinct, inverse = dense_index(values)
    expected, expected_inverse = np.unique(values, return_inverse=True)
    assert distinct.dtype == np.int64 and inverse.dtype == np.int32
    np.testing.assert_array_equal(distinct, expected)
    np.testing.assert_array_equal(inverse, expected_inverse.reshape(values.shape))
    np.testing.assert_array_equal(distinct_sorted(values), expected)


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.int64, st.tuples(st.integers(0, 300), st.just(2)),
                  elements=st.one_of(st.integers(-40, 40), st.integers(INT64.min, INT64.max),
                                     st.sampled_from([INT64.min, INT64.max, 0, -1]))))
def test_pairs_coded_like_numpy(values):
    _same_as_numpy(values)


def test_keys_sharing_a_slot_are_each_found():
    # values whose hash lands on one slot of the table dense_index will size for them: every
    # one after the first is placed, and found, by probing past the others
    rng = np.random.default_rng(7)
    pool = rng.integers(INT64.min, INT64.max, 200_000, dtype=np.int64)
    bits = max(4, (4 * 64).bit_length())
    slots = _slots(pool, bits)
    crowded = pool[slots == np.bincount(slots).argmax()][:16]
    assert len(crowded) >= 8
    others = pool[~np.isin(slots, np.unique(_slots(crowded, bits)))][: 64 - len(crowded)]
    values = np.concatenate([crowded, others, crowded[::-1], others[:6]]).reshape(-1, 2)
    assert len(np.unique(values)) == 64  # the table dense_index sizes has `bits` bits
    _same_as_numpy(values)


def test_a_million_random_ids():
    rng = np.random.default_rng(11)
    ids = rng.integers(INT64.min, INT64.max, 60_000, dtype=np.int64)
    _same_as_numpy(ids[rng.integers(0, len(ids), (500_000, 2))])


def test_sequential_ids_spread_over_the_table():
    # ids that differ only in their high bits (or low ones) must not all land on one slot
    _same_as_numpy((np.arange(20_000, dtype=np.int64) << 40).reshape(-1, 2))
    _same_as_numpy(np.arange(-10_000, 10_000, dtype=np.int64).reshape(-1, 2))


@pytest.mark.parametrize("shape", [(0,), (0, 2), (1,), (1, 2)])
def test_empty_and_single(shape):
    _same_as_numpy(np.full(shape, 5, dtype=np.int64))


@pytest.mark.parametrize(("setting", "expected"), [(None, False), ("1", True)])
def test_matcher_process_leaves_huge_pages_off_unless_asked(setting, expected):
    # the package turns numpy's huge-page advice off before numpy is imported (matcher/__init__.py),
    # and a user's own NUMPY_MADVISE_HUGEPAGE still wins
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if setting is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = setting
    probe = ("import matcher.runner, numpy\n"
             "get = getattr(numpy._core.multiarray, '_get_madvise_hugepage', None)\n"
             "print('unknown' if get is None else get())")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout.strip()
    if out == "unknown":
        pytest.skip("this numpy does not say whether it advises huge pages")
    assert out == str(expected)


@settings(max_examples=200, deadline=None)
@given(
    pairs=hnp.arrays(np.int64, st.tuples(st.integers(0, 40), st.just(2)), elements=st.integers(-50, 50)),
    gone=st.sets(st.integers(-50, 50), max_size=10),
    extra=st.sets(st.integers(-80, 80), max_size=30),
)
def test_pair_positions_find_each_pair_among_the_records_read(pairs, gone, extra):
    """runner.pair_positions: whatever records were read (fewer, when some left the input; more,
    when every live record was read; as many but others), each kept pair points at its own two
    records, and exactly the pairs with a record not read are dropped, in order."""
    from matcher.runner import pair_positions

    uids, inverse = dense_index(pairs)
    rec_uid = np.array(sorted((set(uids.tolist()) - gone) | (extra - gone)), dtype=np.int64)
    li, ri = pair_positions(uids, inverse, rec_uid)
    read = set(rec_uid.tolist())
    expected = [(a, b) for a, b in pairs.tolist() if a in read and b in read]
    assert li.dtype == np.int32 and ri.dtype == np.int32
    assert list(zip(rec_uid[li].tolist(), rec_uid[ri].tolist())) == expected


def test_pair_positions_with_as_many_records_read_but_other_ones():
    from matcher.runner import pair_positions

    pairs = np.array([[10, 20], [20, 30]], dtype=np.int64)
    uids, inverse = dense_index(pairs)
    # 10 left the input and 25 (in no pair) was read instead: the same count, not the same records
    li, ri = pair_positions(uids, inverse, np.array([20, 25, 30], dtype=np.int64))
    assert li.tolist() == [0] and ri.tolist() == [2]
