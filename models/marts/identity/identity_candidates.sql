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
        "{% if not is_incremental() %}{{ candidate_full_build_settings(ref('int_identity__blocking_keys')) }}{% endif %}",
    ],
    post_hook=["{{ mark_loaded(ref('int_identity__records_usable')) }}"],
) }}
-- Candidate pairs: two records (left_uid < right_uid) that share a blocking key whose block
-- (records sharing the key) is no larger than its bound; through a one-deletion key of a phone,
-- a document or a plate, only if their names share a token or one has none (macros/blocking_keys.sql).
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
    select record_uid, phone, document_number, email, plate, claim_driver_id, name_tokens, name_signature
    from {{ ref('int_identity__records_usable') }}
    where load_id > {{ loaded_through(ref('int_identity__records_usable')) }}
        and not is_deleted
),

touched_keys as (
    select record_uid, key_type, {{ blocking_key_hash('key_type', 'key_value') }} as key_hash, name_signature
    from (
        {{ blocking_key_rows('changed') | indent(8) }}
    ) as changed_keys
),

-- Each touched key is looked up once in int_identity__blocking_keys (lateral, so by its own index
-- lookup: the planner's estimate of the inline keys is far off, and a hash join over every
-- stored key is what it would pick instead), reading at most one row more than the largest
-- bound, as arrays: a block over its bound is dropped whole, and a huge one (a common surname
-- pair holds thousands of records at 1M leads) costs no more than a small one. (Sizing with a
-- window count over the whole block took this model to 50 s for 10k new leads on 1M; sizing
-- with a separate index-only count, then expanding, read each block twice: 8-16 s; this: ~5 s.)
looked_up as (
    select
        touched_keys.record_uid,
        touched_keys.key_type,
        touched_keys.name_signature,
        block.uids,
        block.signatures
    from touched_keys
    cross join lateral (
        select
            array_agg(stored.record_uid) as uids,
            array_agg(stored.name_signature) as signatures
        from (
            select keys.record_uid, keys.name_signature
            from {{ ref('int_identity__blocking_keys') }} as keys
            where keys.key_hash = touched_keys.key_hash
            limit {{ blocking_block_bounds().values() | max + 1 }}
        ) as stored
    ) as block
    where cardinality(block.uids) <= {{ blocking_block_bound('touched_keys.key_type') }}
),

joined as (
    select
        least(looked_up.record_uid, looked_up.uids[i]) as left_uid,
        greatest(looked_up.record_uid, looked_up.uids[i]) as right_uid,
        looked_up.key_type
    from looked_up
    cross join lateral generate_series(1, cardinality(looked_up.uids)) as i
    where looked_up.uids[i] <> looked_up.record_uid
        and (looked_up.key_type not in ({{ fuzzy_blocking_key_codes() }})
            or {{ fuzzy_names_compatible('looked_up.name_signature', 'looked_up.signatures[i]') }})
),

{% else %}

-- One pass over the keys in (key_hash, record_uid) order: each block within its bound becomes
-- the sorted array of its records, and its pairs are the index pairs i < j of that array. At
-- 1M leads (41M keys, 11.6M pairs) this takes half the time of a self-join of the kept keys,
-- which sorted or hashed 21M rows twice. The keys come in that order from their index alone (the
-- blocking keys model vacuums after its build, so no heap page is read; a block's type is in its
-- hash, blocking_key_type_of_hash): 53.3 s -> 36.7 s for this query at 1M leads, against sorting
-- the 41M keys (docs/benchmark.md, round 16). candidate_full_build_settings keeps the planner off
-- an index walk that reads the heap (41M random heap reads): were the keys' pages not
-- all-visible, it sorts them instead.
--
-- The key hashes are split into `candidates_full_build_ranges` ranges (key_hash_ranges), one
-- union-all branch each: Postgres runs the branches as a Parallel Append, each on its own core,
-- and merges their pairs below (a single walk of the index is one process from the index to
-- the pairs: the array aggregates take ordered input and cannot be split between workers). At
-- 1M leads on 2 cores: 37.8 / 38.8 s -> 22.9 / 25.6 s for the query (docs/benchmark.md, round
-- 20). The positions are inlined in every branch (`not materialized`): a CTE scan would keep
-- the branches off the parallel workers.
pair_positions as not materialized (
    {{ block_pair_positions(blocking_block_bounds().values() | max) | indent(4) }}
),

-- a block's pairs by a hash join to the positions of its size (block_pair_positions says why)
joined as (
{%- for key_range in key_hash_ranges('key_hash', var('candidates_full_build_ranges', 2)) %}
    select blocks.uids[positions.i] as left_uid, blocks.uids[positions.j] as right_uid, blocks.key_type
    from (
        select
            {{ blocking_key_type_of_hash('key_hash') }} as key_type,
            array_agg(record_uid order by record_uid) as uids,
            array_agg(name_signature order by record_uid) as signatures
        from {{ ref('int_identity__blocking_keys') }}
        where {{ key_range }}
        group by key_hash
        having count(*) > 1
            and count(*) <= {{ blocking_block_bound(blocking_key_type_of_hash('key_hash')) }}
    ) as blocks
    join pair_positions as positions on positions.n = cardinality(blocks.uids)
    where blocks.uids[positions.i] < blocks.uids[positions.j]
        -- one-deletion neighbours only where the names can agree (macros/blocking_keys.sql)
        and (blocks.key_type not in ({{ fuzzy_blocking_key_codes() }})
            or {{ fuzzy_names_compatible('blocks.signatures[positions.i]', 'blocks.signatures[positions.j]') }})
    {%- if not loop.last %}
    union all
    {%- endif %}
{%- endfor %}
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
{% if is_incremental() -%}
-- appended in the order of the unique index, like the new blocking keys (their model says why)
order by left_uid, right_uid
{%- endif %}
