with source as (
    select * from {{ source('canon', 'identity_origin') }}
),

renamed as (
    select
        person_key,
        origin_tag,
        origin_source_table,
        origin_source_pk,
        origin_at,
        origin_rule,
        run_id,
        decided_at
    from source
)

select * from renamed
