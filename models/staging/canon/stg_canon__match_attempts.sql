-- A plain select, no CTEs: Postgres never flattens a view that has a WITH clause into the
-- query reading it, so a lookup through such a view by key cannot use the table's indexes
-- (ops_kpi_red_lead_history_scoped looks rows up here by record and by person).

select
    attempt_id,
    run_id,
    record_uid,
    source_table,
    source_pk,
    record_fingerprint,
    outcome,
    fail_reason,
    best_score,
    match_rule,
    person_key,
    attempted_at
from {{ source('canon', 'match_attempts') }}
