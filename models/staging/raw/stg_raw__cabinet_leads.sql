with

source as (

    select * from {{ source('raw', 'cabinet_leads') }}

),

renamed as (

    select

        ----------  ids
        nullif(trim(cast(lead_id as text)), '') as lead_id,
        -- hash of the raw values this project reads: a changed row gets a new one
        {{ row_hash(['lead_id', 'created_at', 'first_name', 'last_name', 'phone', 'document_number', 'email', 'license_plate']) }} as raw_hash,

        ----------  timestamps
        case when isfinite(cast(created_at as timestamptz)) then cast(created_at as timestamptz) end as event_at,

        ----------  identifiers
        {{ normalize_phone('phone') }} as phone,
        {{ phone_invalid_reason('phone') }} as phone_invalid_reason,
        {{ normalize_document('document_number') }} as document_number,
        {{ normalize_email('email') }} as email,
        {{ normalize_plate('license_plate') }} as plate,

        ----------  names (concat_ws skips a missing part)
        {{ normalize_name("concat_ws(' ', first_name, last_name)") }} as full_name,
        {{ name_sorted_tokens(normalize_name("concat_ws(' ', first_name, last_name)")) }} as name_sorted

    from source

)

select * from renamed
