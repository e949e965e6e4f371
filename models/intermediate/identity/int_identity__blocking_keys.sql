{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='fail',
    unlogged=true,
    indexes=[{'columns': ['key_hash', 'record_uid', 'name_signature']}],
    pre_hook=[
        "{% if is_incremental() %}{{ check_blocking_definition() }}{% endif %}",
        "{% if is_incremental() %}{{ delete_rows_of_rewritten_records(this, ['record_uid'], skip_pruned=true) }}{% endif %}",
        "{% if not is_incremental() %}{{ parallel_full_build_settings() }}{% endif %}",
    ],
    post_hook=[
        "{{ mark_loaded(ref('int_identity__records_usable')) }}",
        "{{ mark_blocking_definition() }}",
        {"sql": "{{ vacuum_appended(this) }}", "transaction": false},
    ],
) }}
-- Blocking keys per record (macros/blocking_keys.sql); two records sharing a key may become a
-- candidate pair. A key is stored as a 64-bit hash of its type and value, with its type code
-- (macros/blocking_key_types.sql): compact, and a block is one index lookup away. The index
-- carries (key_hash, record_uid, name_signature): an incremental run's lookups read the block
-- from the index alone, not from 8 heap pages scattered over the table (at 1M leads, 262k
-- lookups for 10k new leads: 8.0 s -> 3.7 s; the index builds in 20.5 s instead of 15.8 s
-- and takes 1.6 GB instead of 0.6 GB). Every key is
-- kept; a block's size is taken when pairs are built (identity_candidates), so a record that
-- arrives later still meets the ones already here. One-deletion keys carry the record's name
-- signature (a bit per name token): their neighbours become pairs only where names can agree.
-- Incremental: the keys of records rewritten since the last run are deleted and built again; a
-- new record only adds its own. Their old keys are deleted, by index, by the pre-hook of
-- int_identity__records_usable before it replaces the rows they were made from
-- (prune_blocking_keys); this model's pre-hook finds by a pass over the table only those of
-- records that hook could not do (the keys were behind the records, or too many were rewritten). A full build runs on every core (parallel_full_build_settings).
-- An incremental run stops, before writing anything, when the keys are now made differently
-- from when the kept ones were (check_blocking_definition): a full refresh rebuilds them.
-- After every build's commit, a vacuum marks the pages written all-visible (vacuum_appended), so
-- identity_candidates reads each block from the index alone: an incremental run by one lookup
-- per touched key, a full build by walking the whole index in order (a key's type is in the low
-- bits of its hash, blocking_key_hash, so the index has all a block needs). At 1M leads the
-- vacuum after a full build takes 1.5-2.8 s.
--
-- Unlogged: the keys are made again from the records whenever needed, so they are not written
-- to the WAL. An hourly run's new keys land on most leaf pages of the 1.6 GB index (1M leads),
-- and the first change to a page after a checkpoint writes that whole page to the WAL. Measured
-- at 1M leads, 10k new leads right after a checkpoint (a server's default checkpoint_timeout,
-- 5 min, puts one before every hourly run): the insert of their 262k keys took 7.6 s logged and
-- 2.3-3.6 s unlogged, and the whole run wrote 1.83 GB of WAL instead of 0.77 GB. A full build on
-- a server with wal_level replica would also log every key and the index. What that costs: a
-- crash empties an unlogged table (and a standby has none of its rows). The next incremental
-- run finds the table empty (blocking_keys_lost) and keys every live record again into it, then
-- goes on as usual (at 1M leads that run's keys took 143 s, against 75 s for a full build);
-- identity_candidates keeps its pairs, which are logged.

{#- An incremental run keys the records loaded since the last one; every live record when the
    table is empty, which is what a crash leaves of an unlogged table (see above). -#}
{%- set only_new = is_incremental() and not blocking_keys_lost() %}

with all_keys as (
    {{ blocking_key_rows(
        ref('int_identity__records_usable'),
        'not records.is_deleted' ~ (
            ' and records.load_id > ' ~ loaded_through(ref('int_identity__records_usable')) if only_new else ''
        ),
    ) | indent(4) }}
),

final as (
    select record_uid, key_type, {{ blocking_key_hash('key_type', 'key_value') }} as key_hash, name_signature
    from all_keys
)

select * from final
{% if is_incremental() -%}
-- New keys go into the index in its own order: the few hundred thousand keys of an hourly run
-- land on most of its leaf pages (1.6 GB at 1M leads), and in key order those pages are read
-- front to back instead of at random. Measured at 1M leads, 285k keys, index pages out of
-- every cache: 13.9-15.4 s in record order, 5.1-6.7 s in key order (equal when cached: ~3 s).
order by key_hash
{%- endif %}
