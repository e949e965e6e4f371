{{ config(
    materialized='incremental',
    unique_key=['identifier_type', 'identifier_value'],
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    pre_hook=["{% if not is_incremental() %}{{ hashed_full_build_settings() }}{% endif %}"],
    post_hook=["{{ mark_loaded(ref('int_identity__records')) }}"],
) }}
-- Identifier values held by more than `shared_identifier_max_records` distinct records (a
-- dispatcher's phone, a park's email): they never block and never link on their own.
--
-- Incremental: only the values a changed record now carries, and the values shared so far (a
-- changed or deleted record may un-share one), are counted again. A value keeps its row once
-- shared; `is_shared` says whether it still is, and `load_id` changes only when that flips, so
-- int_identity__records_usable re-reads just the records holding a flipped value.

{%- set max_records = var('shared_identifier_max_records') %}

with

{% if is_incremental() %}

touched as (
    select held.identifier_type, held.identifier_value
    from {{ ref('int_identity__records') }} as changed
    cross join lateral (
        values ('phone', changed.phone), ('document', changed.document_number),
            ('email', changed.email), ('plate', changed.plate)
    ) as held (identifier_type, identifier_value)
    where changed.load_id > {{ loaded_through(ref('int_identity__records')) }}
        and held.identifier_value is not null
    union
    select identifier_type, identifier_value
    from {{ this }}
    where is_shared
),

-- the live records holding a touched value, looked up per identifier column through the
-- records' partial index on it (partial_indexes, int_identity__records: in byte order, so the
-- lookup names that collation), not found by a
-- pass over every record (1.2-1.6 s at 1M leads in every hourly run, whatever it brought;
-- before that pass, unfolding every record's four identifiers and joining them all: 4.4 s)
holders as (
    {%- for type, column in [('phone', 'phone'), ('document', 'document_number'), ('email', 'email'), ('plate', 'plate')] %}
    select '{{ type }}'::text as identifier_type, holding.{{ column }} as identifier_value, holding.record_uid
    from {{ ref('int_identity__records') }} as holding
    where holding.{{ column }} collate "C" in (select identifier_value from touched where identifier_type = '{{ type }}')
        and not holding.is_deleted
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

counted as (
    select
        touched.identifier_type,
        touched.identifier_value,
        count(holders.record_uid)::integer as record_count
    from touched
    left join holders
        on holders.identifier_type = touched.identifier_type
        and holders.identifier_value = touched.identifier_value
    group by touched.identifier_type, touched.identifier_value
),

final as (
    select
        counted.identifier_type,
        counted.identifier_value,
        counted.record_count,
        counted.record_count > {{ max_records }} as is_shared,
        case
            when previous.is_shared is not distinct from (counted.record_count > {{ max_records }})
                then previous.load_id
            else {{ current_load_id() }}
        end as load_id
    from counted
    left join {{ this }} as previous
        on previous.identifier_type = counted.identifier_type
        and previous.identifier_value = counted.identifier_value
    where (counted.record_count > {{ max_records }} or previous.identifier_value is not null)
        -- a value whose count did not move keeps its row untouched (a no-change run writes nothing)
        and counted.record_count is distinct from previous.record_count
)

{% else %}

records as (
    select * from {{ ref('int_identity__records') }}
    where not is_deleted
),

identifiers as (
    select held.identifier_type, held.identifier_value, records.record_uid
    from records
    cross join lateral (
        values ('phone', records.phone), ('document', records.document_number),
            ('email', records.email), ('plate', records.plate)
    ) as held (identifier_type, identifier_value)
    where held.identifier_value is not null
),

final as (
    select
        identifier_type,
        identifier_value,
        count(*)::integer as record_count,
        true as is_shared,
        {{ current_load_id() }} as load_id
    from identifiers
    group by identifier_type, identifier_value
    having count(*) > {{ max_records }}
)

{% endif %}

select * from final
