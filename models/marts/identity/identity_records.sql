{{ config(materialized='view') }}
-- What the matcher compares, one row per live record: the usable (non-shared) identifiers, the
-- normalized name and how many records carry that exact name. Part of the matcher's input
-- contract: it reads these once per record involved in a run, not once per pair.

with usable as (
    select * from {{ ref('int_identity__records_usable') }}
    where not is_deleted
),

frequency as (
    select * from {{ ref('int_identity__name_frequency') }}
),

final as (
    select
        usable.record_uid,
        usable.phone,
        usable.document_number,
        usable.email,
        usable.plate,
        usable.full_name,
        frequency.name_frequency
    from usable
    left join frequency on frequency.name_sorted = usable.name_sorted
)

select * from final
