-- Every day, in both daily models: backlog_end = backlog_start + new_backlog_in - outflow,
-- outflow = matched_out + claimed_out, and no count is negative.

with daily as (
    select
        'all' as lead_source_table,
        metric_date, backlog_start, new_backlog_in, matched_out, claimed_out, outflow, backlog_end
    from {{ ref('ops_kpi_red_recovery_metrics_daily') }}
    union all
    select
        lead_source_table,
        metric_date, backlog_start, new_backlog_in, matched_out, claimed_out, outflow, backlog_end
    from {{ ref('ops_kpi_red_recovery_metrics_daily_by_source') }}
)

select *
from daily
where backlog_end <> backlog_start + new_backlog_in - outflow
    or outflow <> matched_out + claimed_out
    or least(backlog_start, new_backlog_in, matched_out, claimed_out, backlog_end) < 0
