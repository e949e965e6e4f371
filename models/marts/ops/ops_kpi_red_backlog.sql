-- The red KPI "leads without identity nor claims": exactly the leads in it now, one row each.

with lead_history as (
    select * from {{ ref('stg_canon__red_lead_history') }}
),

backlog as (
    select * from lead_history
    where is_in_backlog
),

final as (
    select
        lead_record_uid,
        lead_source_table,
        lead_source_pk,
        lead_at,
        cast(lead_at as date) as lead_date,
        gap_reason,
        case
            when gap_reason <> 'no_identity' then gap_reason
            when last_fail_reason is not null then 'no_identity:' || last_fail_reason
            when last_attempt_at is null then 'no_identity:not_attempted'
            -- the latest attempt matched, yet the link is gone (removed by hand)
            else 'no_identity:link_removed'
        end as reason_bucket,
        greatest(cast({{ as_of() }} as date) - cast(lead_at as date), 0) as age_days
    from backlog
)

select * from final
