with source as (
    select * from {{ source('canon', 'match_runs') }}
),

renamed as (
    select
        run_id,
        command,
        status,
        started_at,
        heartbeat_at,
        finished_at,
        parameters,
        processed as records_processed,
        matched as records_matched,
        new_persons,
        origins_written,
        failed as records_failed,
        failed_by_reason,
        pending as records_pending,
        rows_written,
        error as error_message
    from source
)

select * from renamed
