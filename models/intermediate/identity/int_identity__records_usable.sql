{{ config(
    post_hook=["create index on {{ this }} (record_uid)"]
) }}
-- Records with shared identifier values removed: what blocking and scoring may rely on.

with records as (
    select * from {{ ref('int_identity__records') }}
),

shared as (
    select * from {{ ref('int_identity__shared_identifiers') }}
),

flagged as (
    select
        records.*,
        shared_phone.identifier_value is not null as phone_is_shared,
        shared_document.identifier_value is not null as document_is_shared,
        shared_email.identifier_value is not null as email_is_shared,
        shared_plate.identifier_value is not null as plate_is_shared
    from records
    left join shared as shared_phone
        on shared_phone.identifier_type = 'phone' and shared_phone.identifier_value = records.phone
    left join shared as shared_document
        on shared_document.identifier_type = 'document' and shared_document.identifier_value = records.document_number
    left join shared as shared_email
        on shared_email.identifier_type = 'email' and shared_email.identifier_value = records.email
    left join shared as shared_plate
        on shared_plate.identifier_type = 'plate' and shared_plate.identifier_value = records.plate
),

final as (
    select
        record_uid,
        source_table,
        source_pk,
        record_kind,
        origin_tag,
        event_at,
        fingerprint,
        case when not phone_is_shared then phone end as phone,
        case when not document_is_shared then document_number end as document_number,
        case when not email_is_shared then email end as email,
        case when not plate_is_shared then plate end as plate,
        full_name,
        name_sorted,
        -- how many records carry exactly this name (term frequency: a rare name is evidence)
        case when name_sorted is not null
            then count(*) over (partition by name_sorted)::integer end as name_frequency,
        (phone_is_shared or document_is_shared or email_is_shared or plate_is_shared) as has_shared_identifier
    from flagged
)

select * from final
