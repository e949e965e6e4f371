{#- The red-KPI backlog flow, day by day, from each lead's exact entry and exit
    (stg_canon__red_lead_history: ops_kpi_red_lead_history as the matcher last kept it): one
    macro behind ops_kpi_red_recovery_metrics_daily (by_source=false) and ..._by_source
    (by_source=true), so the two cannot drift apart.
    `lead_history` and `backlog_spells` are read several times below, so Postgres would write
    them out whole (every lead's history, 146 MB at 1M leads, to disk) before reading them:
    `not materialized` lets each reader scan the table itself with its own filters and columns
    (at 1M leads, reading ops_kpi_red_recovery_metrics_daily whole: 4.9 s -> 1.7 s, the same
    rows; ops_matcher_health, which reads it, 1.1 s -> 0.19 s). -#}
{% macro red_backlog_flow(by_source) -%}
{%- set grain = "lead_source_table" if by_source else "'all'::text" -%}
with lead_history as not materialized (
    select * from {{ ref('stg_canon__red_lead_history') }}
),

attempts as (
    select * from {{ ref('stg_canon__match_attempts') }}
),

backlog_spells as not materialized (
    select
        {{ grain }} as lead_source_table,
        lead_source_table as source_table,
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

lead_sources as (
    select distinct {{ grain }} as lead_source_table from lead_history
),

entries as (
    select
        lead_source_table,
        entered_date as metric_date,
        count(*) as new_backlog_in
    from backlog_spells
    group by lead_source_table, entered_date
),

exits as (
    select
        lead_source_table,
        exited_date as metric_date,
        count(*) filter (where exit_kind = 'matched') as matched_out,
        count(*) filter (where exit_kind = 'claimed') as claimed_out
    from backlog_spells
    where exited_date is not null
    group by lead_source_table, exited_date
),

-- failed attempts of the day on leads that were in the backlog that day
fail_reason_counts as (
    select
        backlog_spells.lead_source_table,
        cast(attempts.attempted_at as date) as metric_date,
        attempts.fail_reason,
        count(*) as failed_attempts
    from attempts
    inner join backlog_spells
        on backlog_spells.source_table = attempts.source_table
        and backlog_spells.lead_source_pk = attempts.source_pk
    where attempts.outcome = 'failed'
        and cast(attempts.attempted_at as date) >= backlog_spells.entered_date
        and (backlog_spells.exited_date is null or cast(attempts.attempted_at as date) <= backlog_spells.exited_date)
    group by backlog_spells.lead_source_table, cast(attempts.attempted_at as date), attempts.fail_reason
),

top_fail_reasons as (
    select distinct on (lead_source_table, metric_date)
        lead_source_table,
        metric_date,
        fail_reason as top_fail_reason
    from fail_reason_counts
    order by lead_source_table, metric_date, failed_attempts desc, fail_reason
),

daily_flows as (
    select
        calendar.metric_date,
        lead_sources.lead_source_table,
        coalesce(entries.new_backlog_in, 0) as new_backlog_in,
        coalesce(exits.matched_out, 0) as matched_out,
        coalesce(exits.claimed_out, 0) as claimed_out,
        top_fail_reasons.top_fail_reason
    from calendar
    cross join lead_sources
    left join entries
        on entries.metric_date = calendar.metric_date
        and entries.lead_source_table = lead_sources.lead_source_table
    left join exits
        on exits.metric_date = calendar.metric_date
        and exits.lead_source_table = lead_sources.lead_source_table
    left join top_fail_reasons
        on top_fail_reasons.metric_date = calendar.metric_date
        and top_fail_reasons.lead_source_table = lead_sources.lead_source_table
),

running_backlog as (
    select
        *,
        matched_out + claimed_out as outflow,
        -- sum() of bigint is numeric in Postgres: counts stay bigint
        cast(sum(new_backlog_in - matched_out - claimed_out) over (
            partition by lead_source_table
            order by metric_date
            rows between unbounded preceding and current row
        ) as bigint) as backlog_end
    from daily_flows
),

chained_backlog as (
    select
        *,
        coalesce(lag(backlog_end) over (partition by lead_source_table order by metric_date), 0) as backlog_start
    from running_backlog
),

final as (
    select
        metric_date,
        {%- if by_source %}
        lead_source_table,
        {%- endif %}
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
{%- endmacro %}
