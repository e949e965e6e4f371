with

source as (

    select * from {{ source('raw', 'drivers') }}

),

renamed as (

    select

        ----------  ids
        nullif(trim(cast(driver_id as text)), '') as driver_id,
        -- hash of the raw values this project reads: a changed row gets a new one
        {{ row_hash(['driver_id', 'hired_at', 'full_name', 'phone', 'license_number', 'email', 'car_plate']) }} as raw_hash,

        ----------  timestamps
        case when isfinite(cast(hired_at as timestamptz)) then cast(hired_at as timestamptz) end as event_at,

        ----------  identifiers
        {{ normalize_phone('phone') }} as phone,
        {{ phone_invalid_reason('phone') }} as phone_invalid_reason,
        {{ normalize_document('license_number') }} as document_number,
        {{ normalize_email('email') }} as email,
        {{ normalize_plate('car_plate') }} as plate,

        ----------  names
        {{ normalize_name('full_name') }} as full_name,
        {{ name_sorted_tokens(normalize_name('full_name')) }} as name_sorted,

        ----------  driver attributes
        case when isfinite(cast(updated_at as timestamptz)) then cast(updated_at as timestamptz) end as updated_at

    from source

)

select * from renamed
