{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    contract={'enforced': true},
    indexes=[
        {'columns': ['left_uid', 'right_uid'], 'unique': true},
        {'columns': ['right_uid']},
    ],
    pre_hook=[
        "{% if is_incremental() %}{{ delete_rows_of_rewritten_records(this, ['left_uid', 'right_uid']) }}{% endif %}",
        "{% if not is_incremental() %}{{ candidate_full_build_settings() }}{% endif %}",
    ],
    post_hook=["{{ mark_loaded(ref('int_identity__records_usable')) }}"],
) }}
-- Candidate pairs: two records (left_uid < right_uid) that share a blocking key whose block
-- (records sharing the key) is no larger than its bound; through a one-deletion key of a phone
-- or a document, only if their names share a token or one has none (macros/blocking_keys.sql).
-- Linked or not: the matcher reads the pairs that touch a record due for an attempt. This
-- table and identity_records are the matcher's only dbt-built input (contract enforced,
-- exposure `matcher`).
--
-- Incremental: the keys of the records rewritten since the last run are built again here (a few
-- thousand records), each block is looked up in int_identity__blocking_keys through its index
-- and sized as it is now, and the pairs are appended; the pre-hook first deletes the pairs of
-- records that were here before and changed. A block that grew past its bound after its pairs
-- were made keeps them (pairs are only ever added for the newcomer): a superset of a full
-- rebuild's pairs, never a subset, as long as records are only added.
--
-- Indexes: unique (left_uid, right_uid), which also serves lookups by left_uid; right_uid. A
-- full build creates them after the load (a primary key in the contract would be maintained
-- row by row during a 17M-row insert at 1M leads: twice the build time).

with

{% if is_incremental() %}

changed as (
    select record_uid, phone, document_number, email, plate, name_sorted
    from {{ ref('int_identity__records_usable') }}
    where load_id > {{ loaded_through(ref('int_identity__records_usable')) }}
        and not is_deleted
),

{{ blocking_key_ctes('changed', 'changed_') }}

touched_keys as (
    select distinct record_uid, key_type, hashtextextended(key_value, 0) as key_hash, name_signature
    from changed_all_keys
),

-- Each touched block is sized, then expanded, by its own index lookups (lateral, offset 0
-- keeps them so): the planner's estimate of the inline keys is far off (generate_series), and a
-- hash join over every stored key is what a bad estimate would pick instead. Sizing first, by
-- an index-only count that stops past the largest bound, keeps the huge blocks (a common
-- surname pair holds thousands of records at 1M leads) from being read at all: sizing and
-- expanding in one lookup (a window count) took this model from 6 s to 50 s for 10k new leads.
blocks as (
    select touched.key_hash, sized.block_size
    from (select distinct key_hash from touched_keys) as touched
    cross join lateral (
        select count(*) as block_size
        from (
            select 1
            from {{ ref('int_identity__blocking_keys') }} as keys
            where keys.key_hash = touched.key_hash
            limit {{ [var('max_block_size'), var('max_name_block_size'), var('max_name_triple_block_size', 10)] | max + 1 }}
        ) as block_rows
    ) as sized
),

joined as (
    select
        least(touched_keys.record_uid, keys.record_uid) as left_uid,
        greatest(touched_keys.record_uid, keys.record_uid) as right_uid,
        touched_keys.key_type
    from touched_keys
    inner join blocks on blocks.key_hash = touched_keys.key_hash
    cross join lateral (
        select stored.record_uid, stored.name_signature
        from {{ ref('int_identity__blocking_keys') }} as stored
        where stored.key_hash = touched_keys.key_hash
        offset 0
    ) as keys
    where keys.record_uid <> touched_keys.record_uid
        and blocks.block_size <= {{ blocking_block_bound('touched_keys.key_type') }}
        and (touched_keys.key_type not in ({{ blocking_key_code('phone_fuzzy') }}, {{ blocking_key_code('document_fuzzy') }})
            or {{ fuzzy_names_compatible('touched_keys.name_signature', 'keys.name_signature') }})
),

{% else %}

-- One pass over the keys sorted by (key_hash, record_uid): each block within its bound becomes
-- the sorted array of its records, and its pairs are the index pairs i < j of that array. At
-- 1M leads (36M keys, 10M pairs) this takes half the time of a self-join of the kept keys,
-- which sorted or hashed 21M rows twice; candidate_full_build_settings keeps the planner
-- from walking the key_hash index instead of sorting (36M random heap reads).
blocks as (
    select
        min(key_type) as key_type,
        array_agg(record_uid order by record_uid) as uids,
        array_agg(name_signature order by record_uid) as signatures
    from {{ ref('int_identity__blocking_keys') }}
    group by key_hash
    having count(*) > 1
        and count(*) <= {{ blocking_block_bound('min(key_type)') }}
),

joined as (
    select blocks.uids[i] as left_uid, blocks.uids[j] as right_uid, blocks.key_type
    from blocks
    cross join lateral generate_series(1, cardinality(blocks.uids) - 1) as i
    cross join lateral generate_series(i + 1, cardinality(blocks.uids)) as j
    where blocks.uids[i] < blocks.uids[j]
        -- one-deletion neighbours only where the names can agree (macros/blocking_keys.sql)
        and (blocks.key_type not in ({{ blocking_key_code('phone_fuzzy') }}, {{ blocking_key_code('document_fuzzy') }})
            or {{ fuzzy_names_compatible('blocks.signatures[i]', 'blocks.signatures[j]') }})
),

{% endif %}

final as (
    select
        left_uid,
        right_uid,
        bit_or((1 << (key_type - 1))::smallint)::smallint as blocking_mask
    from joined
    group by left_uid, right_uid
)

select * from final
