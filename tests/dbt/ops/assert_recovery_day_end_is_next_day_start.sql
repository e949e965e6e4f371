-- One day's backlog_end is the next day's backlog_start, the first day starts at 0, and no
-- day is missing (per channel and over all channels).

with daily as (
    select 'all' as lead_source_table, metric_date, backlog_start, backlog_end
    from {{ ref('ops_kpi_red_recovery_metrics_daily') }}
    union all
    select lead_source_table, metric_date, backlog_start, backlog_end
    from {{ ref('ops_kpi_red_recovery_metrics_daily_by_source') }}
),

chained as (
    select
        *,
        lag(metric_date) over (partition by lead_source_table order by metric_date) as previous_date,
        lag(backlog_end) over (partition by lead_source_table order by metric_date) as previous_backlog_end
    from daily
)

select *
from chained
where (previous_date is null and backlog_start <> 0)
    or (previous_date is not null and previous_date <> metric_date - 1)
    or (previous_date is not null and backlog_start <> previous_backlog_end)
