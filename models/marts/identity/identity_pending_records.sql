-- Every person record without a link yet, and whether it can be matched at all.
-- A view: it shows a matcher run's new links at once and costs nothing to build; the lookups
-- behind it use the indexes of int_identity__records_usable and canon.identity_links.
--
-- A plain select, no CTEs (like identity_records): Postgres never flattens a view that has a
-- WITH clause into the query reading it, so the matcher's join of its decided records to this
-- view by record_uid would read every pending record instead of looking its own up by index.
--
-- `load_id` is the record's (int_identity__records_usable): an hourly matcher run asks only for
-- the pending records rewritten since its last complete run, by that column's index
-- (matcher/runner.py, _select_due).
{{ config(materialized='view') }}

select
    records.record_uid,
    records.source_table,
    records.source_pk,
    records.record_kind,
    records.origin_tag,
    records.event_at,
    records.fingerprint,
    (
        (records.phone is not null)::integer
        + (records.document_number is not null)::integer
        + (records.email is not null)::integer
        + (records.plate is not null)::integer
    ) as usable_identifier_count,
    case
        when records.phone is null and records.document_number is null
            and records.email is null and records.plate is null
            then case when records.has_shared_identifier then 'shared_identifier' else 'missing_identifiers' end
    end as precheck_fail_reason,
    records.load_id
from {{ ref('int_identity__records_usable') }} as records
where not records.is_deleted
    and not exists (
        select 1
        from {{ ref('stg_canon__identity_links') }} as links
        where links.record_uid = records.record_uid
    )
