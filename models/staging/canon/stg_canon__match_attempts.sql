with source as (
    select * from {{ source('canon', 'match_attempts') }}
),

renamed as (
    select
        attempt_id,
        run_id,
        record_uid,
        source_table,
        source_pk,
        record_fingerprint,
        outcome,
        fail_reason,
        best_score,
        match_rule,
        person_key,
        attempted_at
    from source
)

select * from renamed
