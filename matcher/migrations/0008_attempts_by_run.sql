-- A run reads its own attempts back: the recovery queue update (this run's attempts), the queue
-- seed (this run's attempt of each lead) and the fail-reason counts. The attempt log is
-- append-only and run ids only grow, so this index is written near its right edge and costs
-- little. Without it each such read scans the whole log (1.5M rows at 1M leads). And while the
-- statistics have not yet seen the new run id, the planner takes the run's attempts for one row
-- and may join them by re-scanning the queue for each of them (seen: 11,686 attempts x 491k
-- queue items, over three minutes). With run_id alone, a lookup by (run_id, record_uid) would
-- walk every attempt of the run per lead (seen: 20k leads, 20 s); both columns make it one probe.
create index match_attempts_run on match_attempts (run_id, record_uid);
