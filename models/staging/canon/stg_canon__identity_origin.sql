-- A plain select, no CTEs: Postgres never flattens a view that has a WITH clause into the
-- query reading it, so a lookup through such a view by key cannot use the table's indexes
-- (ops_kpi_red_lead_history_scoped looks rows up here by record and by person).

select
    person_key,
    origin_tag,
    origin_source_table,
    origin_source_pk,
    origin_at,
    origin_rule,
    run_id,
    decided_at
from {{ source('canon', 'identity_origin') }}
