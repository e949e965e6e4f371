-- One row per day: red-KPI backlog flow over every lead channel, counted from each lead's exact
-- entry and exit (ops_kpi_red_lead_history), from the first lead's day to the as_of day.
-- ops_kpi_red_recovery_metrics_daily_by_source is the same per lead_source_table (a test checks the sums).

with lead_history as (
    select * from {{ ref('ops_kpi_red_lead_history') }}
),

attempts as (
    select * from {{ ref('stg_canon__match_attempts') }}
),

backlog_spells as (
    select
        lead_source_table,
        lead_source_pk,
        exit_kind,
        cast(entered_at as date) as entered_date,
        cast(exited_at as date) as exited_date
    from lead_history
    where has_backlog_history
),

calendar as (
    select bounds.first_date + day_offset as metric_date
    from (
        select
            min(cast(entered_at as date)) as first_date,
            cast({{ as_of() }} as date) as last_date
        from lead_history
    ) as bounds
    cross join lateral generate_series(0, bounds.last_date - bounds.first_date) as day_offset
),

entries as (
    select
        entered_date as metric_date,
        count(*) as new_backlog_in
    from backlog_spells
    group by entered_date
),

exits as (
    select
        exited_date as metric_date,
        count(*) filter (where exit_kind = 'matched') as matched_out,
        count(*) filter (where exit_kind = 'claimed') as claimed_out
    from backlog_spells
    where exited_date is not null
    group by exited_date
),

-- failed attempts of the day on leads that were in the backlog that day
fail_reason_counts as (
    select
        cast(attempts.attempted_at as date) as metric_date,
        attempts.fail_reason,
        count(*) as failed_attempts
    from attempts
    inner join backlog_spells
        on backlog_spells.lead_source_table = attempts.source_table
        and backlog_spells.lead_source_pk = attempts.source_pk
    where attempts.outcome = 'failed'
        and cast(attempts.attempted_at as date) >= backlog_spells.entered_date
        and (backlog_spells.exited_date is null or cast(attempts.attempted_at as date) <= backlog_spells.exited_date)
    group by cast(attempts.attempted_at as date), attempts.fail_reason
),

top_fail_reasons as (
    select distinct on (metric_date)
        metric_date,
        fail_reason as top_fail_reason
    from fail_reason_counts
    order by metric_date, failed_attempts desc, fail_reason
),

daily_flows as (
    select
        calendar.metric_date,
        coalesce(entries.new_backlog_in, 0) as new_backlog_in,
        coalesce(exits.matched_out, 0) as matched_out,
        coalesce(exits.claimed_out, 0) as claimed_out,
        top_fail_reasons.top_fail_reason
    from calendar
    left join entries
        on entries.metric_date = calendar.metric_date
    left join exits
        on exits.metric_date = calendar.metric_date
    left join top_fail_reasons
        on top_fail_reasons.metric_date = calendar.metric_date
),

running_backlog as (
    select
        *,
        matched_out + claimed_out as outflow,
        -- sum() of bigint is numeric in Postgres: counts stay bigint
        cast(sum(new_backlog_in - matched_out - claimed_out) over (
            order by metric_date
            rows between unbounded preceding and current row
        ) as bigint) as backlog_end
    from daily_flows
),

chained_backlog as (
    select
        *,
        coalesce(lag(backlog_end) over (order by metric_date), 0) as backlog_start
    from running_backlog
),

final as (
    select
        metric_date,
        backlog_start,
        new_backlog_in,
        matched_out,
        claimed_out,
        outflow,
        backlog_end,
        backlog_end - backlog_start as net_change,
        top_fail_reason
    from chained_backlog
)

select * from final
