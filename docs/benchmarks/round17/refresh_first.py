"""Round 17's measurement of a first red-KPI refresh, alone, on an existing database.

    .venv/bin/python docs/benchmarks/round17/refresh_first.py "host=... dbname=bench"

Empties the kept red-KPI tables inside a transaction, runs `backlog.refresh` as a first refresh
would, prints every statement over 0.2 s (its first 150 characters: SQL only, never row data)
and the total, then rolls everything back: the database is left as it was.
"""
import sys
import time

import psycopg

from matcher import backlog
from matcher import config as config_mod

cfg = config_mod.load(None)
conn = psycopg.connect(sys.argv[1])
execute = psycopg.Connection.execute


def timed(self, query, params=None, **kw):
    t = time.perf_counter()
    cur = execute(self, query, params, **kw)
    seconds = time.perf_counter() - t
    if seconds > 0.2:
        text = query.as_string(self) if hasattr(query, "as_string") else str(query)
        print(f"{seconds:7.2f}s  {' '.join(text.split())[:150]}", flush=True)
    return cur


psycopg.Connection.execute = timed
conn.execute("truncate canon.red_lead_history, canon.recovery_queue, canon.red_lead_claims,"
             " canon.red_lead_history_inputs")
run_id = conn.execute("select max(run_id) from canon.match_runs").fetchone()[0]
t = time.perf_counter()
rows = backlog.refresh(conn, cfg, run_id)
print(f"refresh {time.perf_counter() - t:.2f} s, rows {rows}")
conn.rollback()
