-- One row: drivers working today / in the last 7 days who have no identity (a KPI of its own,
-- not a gap category: it cannot be measured per lead).

with unlinked_activity as (
    select * from {{ ref('ops_driver_unlinked_activity_detail') }}
),

final as (
    select
        cast({{ as_of() }} as date) as as_of_date,
        count(*) filter (where trips_today > 0) as drivers_active_today_unlinked,
        count(*) as drivers_active_7d_unlinked,
        -- sum() of bigint is numeric in Postgres: counts stay bigint
        cast(coalesce(sum(trips_today), 0) as bigint) as trips_today_unlinked,
        cast(coalesce(sum(trips_7d), 0) as bigint) as trips_7d_unlinked
    from unlinked_activity
)

select * from final
