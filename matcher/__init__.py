"""Identity resolution for ride-hailing fleet partners: the Python half of a dbt project.

dbt builds the candidate table; this package scores it, clusters records into persons and
idempotently upserts the registry, links and origins. See docs/architecture.md.
"""
import os

# numpy asks the kernel for transparent huge pages for every array of 4 MB or more. Where the
# kernel's THP defrag policy is "madvise" (a common default), each such page fault may stall to
# compact memory, and beside a database whose page cache fills memory it often does: at 1M
# leads the run's read phase took 22.9 s with them and 14.7 s without (docs/benchmark.md,
# round 9). Off unless the user sets NUMPY_MADVISE_HUGEPAGE=1; numpy reads it on import, so
# this comes before any module of the package imports numpy.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

__version__ = "0.1.0"
