with

source as (

    select * from {{ source('raw', 'fleet_migrations') }}

),

renamed as (

    select

        ----------  ids
        nullif(trim(cast(migration_id as text)), '') as migration_id,
        -- hash of the raw values this project reads: a changed row gets a new one
        {{ row_hash(['migration_id', 'migrated_at', 'full_name', 'phone', 'document_number', 'license_plate']) }} as raw_hash,

        ----------  timestamps
        case when isfinite(cast(migrated_at as timestamptz)) then cast(migrated_at as timestamptz) end as event_at,

        ----------  identifiers
        {{ normalize_phone('phone') }} as phone,
        {{ phone_invalid_reason('phone') }} as phone_invalid_reason,
        {{ normalize_document('document_number') }} as document_number,
        cast(null as text) as email,
        {{ normalize_plate('license_plate') }} as plate,

        ----------  names
        {{ normalize_name('full_name') }} as full_name,
        {{ name_sorted_tokens(normalize_name('full_name')) }} as name_sorted,

        ----------  migration attributes
        nullif(trim(from_park), '') as from_park

    from source

)

select * from renamed
