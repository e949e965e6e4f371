-- The red-KPI state of every lead as of the last matcher run: the rows of the dbt view
-- ops_kpi_red_lead_history (its as_of-independent columns), kept by the matcher in the same
-- transaction as the recovery queue. The KPI views read this table instead of deriving every
-- lead's history on each read; a run rewrites only the rows whose state changed, so a run over
-- unchanged data writes nothing here.
create table red_lead_history (
    lead_record_uid     bigint      primary key,
    lead_source_table   text        not null,
    lead_source_pk      text        not null,
    lead_at             timestamptz,
    gap_reason          text        not null,
    last_fail_reason    text,
    last_attempt_at     timestamptz,
    resolved_at         timestamptz,
    claim_covered_at    timestamptz,
    is_in_backlog       boolean     not null,
    exit_kind           text,
    left_at             timestamptz,
    updated_run_id      bigint      references match_runs (run_id),
    updated_at          timestamptz not null default clock_timestamp()
);
