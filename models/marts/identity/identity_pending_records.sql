{{ config(materialized='view') }}
-- Every person record without a link yet, and whether it can be matched at all.
-- A view: it shows a matcher run's new links at once and costs nothing to build; the lookups
-- behind it use the indexes of int_identity__records_usable and canon.identity_links.

with records as (
    select * from {{ ref('int_identity__records_usable') }}
    where not is_deleted
),

links as (
    select * from {{ ref('stg_canon__identity_links') }}
),

pending as (
    select records.*
    from records
    where not exists (select 1 from links where links.record_uid = records.record_uid)
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
        (
            (phone is not null)::integer
            + (document_number is not null)::integer
            + (email is not null)::integer
            + (plate is not null)::integer
        ) as usable_identifier_count,
        case
            when phone is null and document_number is null and email is null and plate is null
                then case when has_shared_identifier then 'shared_identifier' else 'missing_identifiers' end
        end as precheck_fail_reason
    from pending
)

select * from final
