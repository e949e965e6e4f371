with

source as (

    select * from {{ source('raw', 'claims') }}

),

renamed as (

    select

        ----------  ids
        nullif(trim(cast(claim_id as text)), '') as claim_id,
        nullif(trim(cast(driver_id as text)), '') as driver_id,
        nullif(trim(cast(lead_id as text)), '') as lead_id,

        ----------  attributes
        cast(milestone as integer) as milestone,
        cast(amount as numeric) as amount,
        case when isfinite(cast(claimed_at as timestamptz)) then cast(claimed_at as timestamptz) end as claimed_at,
        nullif(lower(trim(status)), '') as status

    from source

)

select * from renamed
