-- A plain select, no CTEs: Postgres never flattens a view that has a WITH clause into the
-- query reading it, so a lookup through such a view by key cannot use the table's indexes
-- (ops_kpi_red_lead_history_scoped looks rows up here by record and by person).

select
    record_uid,
    source_table,
    source_pk,
    person_key,
    match_rule,
    match_score,
    confidence,
    source_event_at,
    run_id,
    linked_at,
    updated_at
from {{ source('canon', 'identity_links') }}
