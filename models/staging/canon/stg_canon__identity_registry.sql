with source as (
    select * from {{ source('canon', 'identity_registry') }}
),

renamed as (
    select
        person_key,
        created_at,
        created_by_run as created_by_run_id
    from source
)

select * from renamed
