"""Scoring on forked processes (matcher/forked.py): the same result as one process, and a child
that fails or dies is one clear error with nothing left behind."""
from __future__ import annotations

import dataclasses
import os
import signal

import numpy as np
import pytest

from matcher import config, forked, scoring
from matcher.errors import MatcherError
from matcher.runner import Run, RunResult

pytestmark = pytest.mark.skipif(not forked.available(), reason="scoring is forked on Linux only")

FIRST = ["ana", "luis", "jose", "maria", "rosa", "juan", "carmen", "pedro", "lucia", "jorge"]
LAST = ["quispe", "mamani", "rojas", "flores", "huaman", "garcia", "torres", "vargas", "pena", "cruz"]


def _typo(rng: np.random.Generator, value: str) -> str:
    i = int(rng.integers(len(value)))
    return value[:i] + str(rng.integers(10)) + value[i + 1:]


def _records(rng: np.random.Generator, persons: int = 700, per_person: int = 4) -> dict[str, list[str]]:
    """Records of a few hundred people, each seen several times with typos and gaps."""
    columns: dict[str, list[str]] = {f: [] for f in config.FIELDS}
    for _ in range(persons):
        phone = "9" + "".join(map(str, rng.integers(10, size=8)))
        document = "".join(map(str, rng.integers(10, size=8)))
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {rng.choice(LAST)}"
        email = name.split()[0] + str(rng.integers(100)) + "@mail.pe"
        plate = "ABC" + "".join(map(str, rng.integers(10, size=3)))
        claim = f"D{rng.integers(200)}" if rng.random() < 0.2 else ""
        for _ in range(per_person):
            row = {"phone": phone, "document": document, "email": email, "plate": plate, "claim": claim, "name": name}
            for f in ("phone", "document", "plate"):
                if rng.random() < 0.2:
                    row[f] = _typo(rng, row[f])
            for f in row:
                if rng.random() < 0.15:
                    row[f] = ""
            for f in config.FIELDS:
                columns[f].append(row[f])
    return columns


def _score(cfg: config.Config, li, ri, values, codes, freq) -> tuple[dict, RunResult]:
    result = RunResult(run_id=0, status="running")
    uid = np.arange(len(freq), dtype=np.int64) * 3 + 11
    person = np.array([None] * len(freq), dtype=object)
    run = Run(None, cfg)
    return run._score(li, ri, uid, freq, person, values, codes, result), result


def test_scoring_on_forked_processes_gives_what_one_process_gives():
    rng = np.random.default_rng(7)
    columns = _records(rng)
    n = len(columns["phone"])
    values, codes = {}, {}
    for f in config.FIELDS:
        values[f], (codes[f],) = scoring.Values.encode(columns[f])
    # pairs within each person's records, and as many between strangers
    same = np.array([(i, j) for p in range(0, n, 4) for i in range(p, p + 4) for j in range(i + 1, p + 4)])
    other = rng.integers(n, size=(len(same), 2))
    pairs = np.concatenate([same, other[other[:, 0] != other[:, 1]]])
    li, ri = pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32)
    freq = rng.integers(1, 4, size=n).astype(np.int32)
    base = dataclasses.replace(config.load(), read_batch_size=1000)

    one, one_run = _score(dataclasses.replace(base, score_processes=1), li, ri, values, codes, freq)
    three, three_run = _score(dataclasses.replace(base, score_processes=3), li, ri, values, codes, freq)

    assert (one_run.score_processes, three_run.score_processes) == (1, 3)
    assert one_run.score_children_mb == 0 and three_run.score_children_mb > 0
    assert three_run.pairs_scored == one_run.pairs_scored == len(li)
    assert 100 < one_run.pairs_accepted < len(same)
    assert one.keys() == three.keys()
    for key in one:
        assert one[key].dtype == three[key].dtype and np.array_equal(one[key], three[key]), key


def test_processes_follow_the_configuration_and_the_work():
    cfg = config.load()
    auto = Run(None, dataclasses.replace(cfg, score_processes=0))
    assert auto._score_processes(200_000, 1) == 1
    assert auto._score_processes(900_000, 5) == 1
    assert auto._score_processes(12_000_000, 60) == min(forked.cpu_count(), 4)
    assert Run(None, dataclasses.replace(cfg, score_processes=1))._score_processes(12_000_000, 60) == 1
    # never more processes than batches
    assert Run(None, dataclasses.replace(cfg, score_processes=8))._score_processes(2_000, 2) == 2


def _fails_on(bad: int, how: str):
    def work(part: int) -> int:
        if part == bad and how == "raise":
            raise ValueError("+51 987 654 321 maria quispe")  # what a message could quote
        if part == bad and how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return part * part
    return work


def _no_child_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_map_forked_returns_each_part_in_order():
    results, memory = forked.map_forked(_fails_on(-1, "none"), [1, 2, 3, 4])
    assert results == [1, 4, 9, 16] and memory > 0
    assert _no_child_left()


@pytest.mark.parametrize("how,message", [("raise", "a scoring process failed: ValueError"),
                                         ("kill", "killed by signal 9")])
def test_a_failing_child_is_one_clear_error_without_its_data(how, message):
    with pytest.raises(MatcherError) as failure:
        forked.map_forked(_fails_on(2, how), [1, 2, 3])
    assert message in str(failure.value)
    assert "987" not in str(failure.value) and "quispe" not in str(failure.value)
    assert _no_child_left()


def test_a_failing_parent_stops_its_children():
    with pytest.raises(ValueError):
        forked.map_forked(_fails_on(1, "raise"), [1, 2, 3])
    assert _no_child_left()
