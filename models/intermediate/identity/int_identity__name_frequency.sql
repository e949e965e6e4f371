{{ config(
    materialized='incremental',
    unique_key='name_sorted',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    indexes=[{'columns': ['name_sorted']}],
    post_hook=["{{ mark_loaded(ref('int_identity__records_usable')) }}"],
) }}
-- How many live records carry exactly this (sorted) name: term frequency, so that a rare
-- full name counts as evidence and a common one does not.
--
-- Incremental: names of the records rewritten since the last run, old and new, are counted
-- again; a name no record carries any more keeps a row with frequency 0.

with usable as (
    select name_sorted from {{ ref('int_identity__records_usable') }}
    where not is_deleted and name_sorted is not null
),

{% if is_incremental() %}

touched as (
    select name_sorted from {{ ref('int_identity__records_usable') }}
    where load_id > {{ loaded_through(ref('int_identity__records_usable')) }} and name_sorted is not null
    union
    select replaced_name_sorted from {{ ref('int_identity__records_usable') }}
    where load_id > {{ loaded_through(ref('int_identity__records_usable')) }} and replaced_name_sorted is not null
),

final as (
    select touched.name_sorted, count(usable.name_sorted)::integer as name_frequency
    from touched
    -- through the records' partial index on the name, which is in byte order (partial_indexes)
    left join usable on usable.name_sorted collate "C" = touched.name_sorted
    group by touched.name_sorted
)

{% else %}

final as (
    select name_sorted, count(*)::integer as name_frequency
    from usable
    group by name_sorted
)

{% endif %}

select * from final
