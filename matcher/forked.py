"""Work split between forked processes, for the CPU-bound part of a run (scoring pairs).

Scoring is numpy and rapidfuzz calls over object arrays of strings, which hold the GIL for most
of their time: on threads it does not go faster (1M leads, 11.7M pairs: 24.9 s on one thread,
23.4 s on two), on processes it does (14-16 s on two). A forked child starts with the parent's
memory shared copy-on-write: the records' values, their codes and the comparison caches are not
copied or pickled; only each child's result comes back, pickled through a pipe.

The children touch no database connection, log nothing and end with `os._exit`, so nothing
the parent owns (its connections' sockets, its files) is closed or flushed by them. A child that
fails reports only its exception's type (messages may quote a record's values), and the parent
raises `MatcherError`; a parent that fails or is interrupted kills and reaps its children
before the exception goes on.
"""
from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from matcher.errors import MatcherError

T = TypeVar("T")
R = TypeVar("R")


def available() -> bool:
    """Whether work may be forked here: Linux only (elsewhere fork is missing, or is unsafe
    for the system libraries a process has loaded, as on macOS)."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def private_memory_mb() -> float | None:
    """This process's private memory (pages not shared with its parent), in MB; None where the
    kernel does not say (not Linux)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            fields = {parts[0].rstrip(":"): parts[1] for parts in map(str.split, f) if len(parts) >= 2}
        return (int(fields["Private_Clean"]) + int(fields["Private_Dirty"])) / 1024
    except (OSError, KeyError, ValueError):
        return None


def map_forked(fn: Callable[[T], R], parts: Sequence[T]) -> tuple[list[R], float]:
    """`[fn(part) for part in parts]`, each part after the first in a forked child, the first in
    this process meanwhile; and the children's private memory when they ended, in MB, summed
    (what they added to this process's own)."""
    children: dict[int, int] = {}  # pid -> read end of its pipe
    # Every object now moves to the collector's permanent generation: a collection in a child
    # would otherwise walk them all, writing to each one's header, and so copy the parent's
    # whole heap into the child page by page (Python's gc.freeze documentation).
    gc.freeze()
    try:
        for part in parts[1:]:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(fn, part, write_fd)
            os.close(write_fd)
            children[pid] = read_fd
        results = [fn(parts[0])]
        memory = 0.0
        for pid in list(children):
            with os.fdopen(children.pop(pid), "rb") as pipe:
                payload = pipe.read()
            _, status = os.waitpid(pid, 0)
            if not payload:
                raise MatcherError(f"a scoring process ended without a result ({_describe(status)})")
            ok, value, child_memory = pickle.loads(payload)
            if not ok:
                raise MatcherError(f"a scoring process failed: {value}")
            results.append(value)
            memory += child_memory
        return results, memory
    finally:
        gc.unfreeze()
        for pid, read_fd in children.items():
            os.close(read_fd)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def _child(fn: Callable[[T], R], part: T, write_fd: int) -> None:
    """Run in a forked child: fn(part) to the pipe, then end without returning."""
    code = 1
    try:
        try:
            result = (True, fn(part), private_memory_mb() or 0.0)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, by type only
            result = (False, type(exc).__name__, 0.0)
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
        code = 0 if result[0] else 1
    finally:
        os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
