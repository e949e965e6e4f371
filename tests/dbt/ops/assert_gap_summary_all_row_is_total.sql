-- The gap summary's 'all' row is the sum of the channel rows, and each row adds up.

with summary as (
    select * from {{ ref('ops_identity_gap_summary') }}
),

channel_totals as (
    select
        sum(leads) as leads,
        sum(resolved) as resolved,
        sum(no_identity) as no_identity,
        sum(no_origin) as no_origin,
        sum(inconsistent_origin) as inconsistent_origin
    from summary
    where lead_source_table <> 'all'
)

select summary.lead_source_table
from summary
cross join channel_totals
where (summary.lead_source_table = 'all'
        and (summary.leads, summary.resolved, summary.no_identity, summary.no_origin, summary.inconsistent_origin)
        is distinct from (coalesce(channel_totals.leads, 0), coalesce(channel_totals.resolved, 0),
            coalesce(channel_totals.no_identity, 0), coalesce(channel_totals.no_origin, 0),
            coalesce(channel_totals.inconsistent_origin, 0)))
    or summary.leads <> summary.resolved + summary.unresolved
    or summary.unresolved <> summary.no_identity + summary.no_origin + summary.inconsistent_origin
