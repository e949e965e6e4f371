-- The red-KPI state of every lead as the matcher last kept it, with the as_of-capped backlog
-- moments computed here as ops_kpi_red_lead_history computes them (macro red_lead_moments).

with source as (
    select * from {{ source('canon', 'red_lead_history') }}
),

final as (
    {{ red_lead_moments('source', extra_columns=['updated_run_id']) }}
)

select * from final
