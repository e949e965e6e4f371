-- A lead is in ops_kpi_red_backlog exactly when it is unresolved and no claim covers it,
-- and exactly then its history has no exit.

select
    lead_record_uid,
    gap_reason,
    claim_covered_at,
    is_in_backlog,
    exited_at,
    exit_kind
from {{ ref('stg_canon__red_lead_history') }} as lead_history
where is_in_backlog <> (gap_reason <> 'resolved' and claim_covered_at is null and exit_kind is null)
    or is_in_backlog <> (exited_at is null)
    or is_in_backlog <> (exit_kind is null)
    or is_in_backlog <> exists (
        select 1 from {{ ref('ops_kpi_red_backlog') }} as backlog
        where backlog.lead_record_uid = lead_history.lead_record_uid
    )
