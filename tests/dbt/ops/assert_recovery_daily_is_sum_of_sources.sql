-- The daily counts are the sums of the per-channel counts, day by day, on the same days.

with summed as (
    select
        metric_date,
        sum(backlog_start) as backlog_start,
        sum(new_backlog_in) as new_backlog_in,
        sum(matched_out) as matched_out,
        sum(claimed_out) as claimed_out,
        sum(backlog_end) as backlog_end
    from {{ ref('ops_kpi_red_recovery_metrics_daily_by_source') }}
    group by metric_date
),

daily as (
    select * from {{ ref('ops_kpi_red_recovery_metrics_daily') }}
)

select
    coalesce(daily.metric_date, summed.metric_date) as metric_date
from daily
full outer join summed
    on summed.metric_date = daily.metric_date
where daily.metric_date is null
    or summed.metric_date is null
    or (daily.backlog_start, daily.new_backlog_in, daily.matched_out, daily.claimed_out, daily.backlog_end)
    <> (summed.backlog_start, summed.new_backlog_in, summed.matched_out, summed.claimed_out, summed.backlog_end)
