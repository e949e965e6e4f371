-- One row per driver with trips in the 7 days ending on the as_of date and no identity link.

with driver_activity as (
    select * from {{ ref('stg_raw__driver_activity') }}
),

driver_links as (
    select source_pk as driver_id
    from {{ ref('stg_canon__identity_links') }}
    where source_table = 'drivers'
),

recent_activity as (
    select
        driver_id,
        activity_date,
        completed_trips
    from driver_activity
    where completed_trips > 0
        and activity_date between cast({{ as_of() }} as date) - 6 and cast({{ as_of() }} as date)
        and driver_id is not null
),

final as (
    select
        recent_activity.driver_id,
        max(recent_activity.activity_date) as last_activity_date,
        sum(recent_activity.completed_trips) as trips_7d,
        coalesce(
            sum(recent_activity.completed_trips) filter (
                where recent_activity.activity_date = cast({{ as_of() }} as date)
            ),
            0
        ) as trips_today
    from recent_activity
    where not exists (
        select 1 from driver_links
        where driver_links.driver_id = recent_activity.driver_id
    )
    group by recent_activity.driver_id
)

select * from final
