with

source as (

    select * from {{ source('raw', 'scout_registrations') }}

),

renamed as (

    select

        ----------  ids
        nullif(trim(cast(registration_id as text)), '') as registration_id,
        -- hash of the raw values this project reads: a changed row gets a new one
        {{ row_hash(['registration_id', 'registered_at', 'full_name', 'phone', 'document_number', 'license_plate']) }} as raw_hash,

        ----------  timestamps
        case when isfinite(cast(registered_at as timestamptz)) then cast(registered_at as timestamptz) end as event_at,

        ----------  identifiers
        {{ normalize_phone('phone') }} as phone,
        {{ phone_invalid_reason('phone') }} as phone_invalid_reason,
        {{ normalize_document('document_number') }} as document_number,
        cast(null as text) as email,
        {{ normalize_plate('license_plate') }} as plate,

        ----------  names
        {{ normalize_name('full_name') }} as full_name,
        {{ name_sorted_tokens(normalize_name('full_name')) }} as name_sorted,

        ----------  registration attributes
        nullif(trim(cast(scout_id as text)), '') as scout_id

    from source

)

select * from renamed
