with

source as (

    select * from {{ source('raw', 'driver_activity') }}

),

renamed as (

    select

        ----------  ids
        nullif(trim(cast(driver_id as text)), '') as driver_id,

        ----------  dates
        cast(activity_date as date) as activity_date,

        ----------  numerics
        cast(completed_trips as integer) as completed_trips

    from source

)

select * from renamed
