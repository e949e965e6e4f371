with source as (
    select * from {{ source('canon', 'identity_links') }}
),

renamed as (
    select
        record_uid,
        source_table,
        source_pk,
        person_key,
        match_rule,
        match_score,
        confidence,
        source_event_at,
        run_id,
        linked_at,
        updated_at
    from source
)

select * from renamed
