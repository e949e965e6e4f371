{{ config(materialized='view') }}
-- What the matcher compares, one row per live record: the usable (non-shared) identifiers, the
-- driver claims name the record for (a driver: its own id), the normalized name and how many records carry that exact name. Part of the matcher's input
-- contract: it reads these once per record involved in a run, not once per pair.
--
-- A plain select, no CTEs: Postgres never flattens a view that has a WITH clause into the
-- query reading it, so the matcher's join by record_uid would build the whole view (every
-- record, every name frequency) instead of looking its records up by index.

select
    usable.record_uid,
    usable.phone,
    usable.document_number,
    usable.email,
    usable.plate,
    usable.claim_driver_id,
    usable.full_name,
    frequency.name_frequency
from {{ ref('int_identity__records_usable') }} as usable
left join {{ ref('int_identity__name_frequency') }} as frequency
    on frequency.name_sorted = usable.name_sorted
where not usable.is_deleted
