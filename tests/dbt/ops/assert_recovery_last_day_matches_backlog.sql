-- The daily metrics end on the as_of day, and that day's backlog_end is the row count of
-- ops_kpi_red_backlog (over all channels and per channel). With no lead at all both are empty.

with backlog_counts as (
    select 'all' as lead_source_table, count(*) as backlog_size
    from {{ ref('ops_kpi_red_backlog') }}
    union all
    select lead_source_table, count(*)
    from {{ ref('ops_kpi_red_backlog') }}
    group by lead_source_table
),

last_days as (
    select 'all' as lead_source_table, metric_date, backlog_end
    from {{ ref('ops_kpi_red_recovery_metrics_daily') }}
    where metric_date = (select max(metric_date) from {{ ref('ops_kpi_red_recovery_metrics_daily') }})
    union all
    select lead_source_table, metric_date, backlog_end
    from {{ ref('ops_kpi_red_recovery_metrics_daily_by_source') }}
    where metric_date = (select max(metric_date) from {{ ref('ops_kpi_red_recovery_metrics_daily_by_source') }})
)

select
    coalesce(backlog_counts.lead_source_table, last_days.lead_source_table) as lead_source_table,
    backlog_counts.backlog_size,
    last_days.metric_date,
    last_days.backlog_end
from backlog_counts
full outer join last_days
    on last_days.lead_source_table = backlog_counts.lead_source_table
where coalesce(last_days.backlog_end, 0) <> coalesce(backlog_counts.backlog_size, 0)
    or last_days.metric_date <> cast({{ as_of() }} as date)
