-- Gap counts per lead channel, plus one row 'all' over every lead.

with gap_analysis as (
    select * from {{ ref('ops_identity_gap_analysis') }}
),

counted as (
    select
        coalesce(lead_source_table, 'all') as lead_source_table,
        count(*) as leads,
        count(*) filter (where gap_reason = 'resolved') as resolved,
        count(*) filter (where gap_reason = 'no_identity') as no_identity,
        count(*) filter (where gap_reason = 'no_origin') as no_origin,
        count(*) filter (where gap_reason = 'inconsistent_origin') as inconsistent_origin,
        count(*) filter (where gap_reason <> 'resolved') as unresolved
    from gap_analysis
    -- () always yields the 'all' row, even over zero leads
    group by grouping sets ((lead_source_table), ())
),

final as (
    select
        lead_source_table,
        leads,
        resolved,
        no_identity,
        no_origin,
        inconsistent_origin,
        unresolved,
        cast(coalesce(round(100.0 * unresolved / nullif(leads, 0), 2), 0) as numeric(5, 2)) as pct_unresolved
    from counted
)

select * from final
