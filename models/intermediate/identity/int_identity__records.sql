{{ config(
    post_hook=["create index on {{ this }} (record_uid)"]
) }}
-- One row per person record of every channel, in one shape: the unit the matcher resolves.

with cabinet_leads as (
    select
        'cabinet_leads'::text as source_table,
        lead_id as source_pk,
        'lead'::text as record_kind,
        'cabinet_lead'::text as origin_tag,
        event_at, phone, phone_invalid_reason, document_number, email, plate, full_name, name_sorted
    from {{ ref('stg_raw__cabinet_leads') }}
),

scout_registrations as (
    select
        'scout_registrations'::text as source_table,
        registration_id as source_pk,
        'lead'::text as record_kind,
        'scout_registration'::text as origin_tag,
        event_at, phone, phone_invalid_reason, document_number, email, plate, full_name, name_sorted
    from {{ ref('stg_raw__scout_registrations') }}
),

fleet_migrations as (
    select
        'fleet_migrations'::text as source_table,
        migration_id as source_pk,
        'lead'::text as record_kind,
        'fleet_migration'::text as origin_tag,
        event_at, phone, phone_invalid_reason, document_number, email, plate, full_name, name_sorted
    from {{ ref('stg_raw__fleet_migrations') }}
),

drivers as (
    select
        'drivers'::text as source_table,
        driver_id as source_pk,
        'driver'::text as record_kind,
        'driver_direct'::text as origin_tag,
        event_at, phone, phone_invalid_reason, document_number, email, plate, full_name, name_sorted
    from {{ ref('stg_raw__drivers') }}
),

unioned as (
    select * from cabinet_leads
    union all
    select * from scout_registrations
    union all
    select * from fleet_migrations
    union all
    select * from drivers
),

final as (
    select
        {{ record_uid('source_table', 'source_pk') }} as record_uid,
        source_table,
        source_pk,
        record_kind,
        origin_tag,
        event_at,
        phone,
        phone_invalid_reason,
        document_number,
        email,
        plate,
        full_name,
        name_sorted,
        md5(concat_ws('|', phone, document_number, email, plate, full_name, event_at::text)) as fingerprint
    from unioned
    where source_pk is not null
)

select * from final
