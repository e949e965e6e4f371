-- net_change = backlog_end - backlog_start, every day, in both daily models.

with daily as (
    select 'all' as lead_source_table, metric_date, backlog_start, backlog_end, net_change
    from {{ ref('ops_kpi_red_recovery_metrics_daily') }}
    union all
    select lead_source_table, metric_date, backlog_start, backlog_end, net_change
    from {{ ref('ops_kpi_red_recovery_metrics_daily_by_source') }}
)

select *
from daily
where net_change <> backlog_end - backlog_start
