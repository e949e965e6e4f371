{#- How the incremental identity models hand changes down.

    Every row an incremental identity model writes carries `load_id`: the id of the
    transaction that wrote it (`pg_current_xact_id()`, which only grows). A small state table,
    `intermediate.identity_load_state`, remembers per (model, upstream) the highest upstream
    `load_id` the model has consumed. A model reads the upstream rows above its mark and moves
    the mark in a post-hook, inside the same transaction as its own write: a run that dies
    half-way leaves every mark where it was, and the next run redoes exactly the same rows.
    A full refresh (or a first build) reads everything and sets the mark too. -#}

{% macro load_state_relation() -%}
    {{ adapter.quote(generate_schema_name('intermediate', none) | trim) }}.identity_load_state
{%- endmacro %}

{#- on-run-start: the state table exists before any model reads it -#}
{#- (`create schema if not exists` needs CREATE on the database even when the schema exists,
    which a builder login that only owns its schemas does not have) -#}
{% macro create_load_state() -%}
    {%- set schema = generate_schema_name('intermediate', none) | trim -%}
    do $state$ begin
        if to_regnamespace({{ "'" ~ adapter.quote(schema) | replace("'", "''") ~ "'" }}) is null then
            create schema {{ adapter.quote(schema) }};
        end if;
    end $state$;
    create table if not exists {{ load_state_relation() }} (
        model_name text not null,
        upstream_name text not null,
        loaded_through bigint not null,
        updated_at timestamptz not null default now(),
        primary key (model_name, upstream_name)
    )
{%- endmacro %}

{#- the load id of the rows this model writes now: the id of the model's transaction, taken
    once by its pre-hook (identity_session_settings) and read back as a setting, so the query
    that writes the rows stays parallel-safe (pg_current_xact_id() itself is parallel-unsafe and
    would keep a whole full build on one core) -#}
{% macro current_load_id() -%}
    current_setting('fleet_identity.load_id')::bigint
{%- endmacro %}

{#- the highest load id of `upstream` this model has consumed (-1: none), as a number read when
    the model is compiled, right before it runs (only its own post-hook moves the mark). A
    constant lets the planner size `load_id > mark` from the load-id index (the newest rows lie
    past the statistics, and the planner reads the index's end for them): compared with a
    sub-query, which it takes for a third of the table, it looks the few thousand rows of an
    hourly run up by index instead of scanning and hashing every record (at 1M leads, 10k new
    leads: the query of int_identity__records_usable 1.17-1.25 s -> 0.62-0.80 s; with the name
    index of partial_indexes, that of int_identity__name_frequency 1.49-1.52 s -> 0.13-0.28 s).
    While dbt only parses (nothing executes), and before the state table exists, the sub-query. -#}
{% macro loaded_through(upstream) -%}
    {%- set mark_query -%}
        select loaded_through from {{ load_state_relation() }}
        where model_name = '{{ this.identifier }}' and upstream_name = '{{ upstream.identifier }}'
    {%- endset -%}
    {%- if execute and run_query("select to_regclass('" ~ (load_state_relation() | replace("'", "''")) ~ "') is not null").rows[0][0] -%}
        {%- set found = run_query(mark_query) -%}
        {{ found.rows[0][0] if found.rows else -1 }}::bigint
    {%- else -%}
        coalesce(({{ mark_query }}), -1)
    {%- endif -%}
{%- endmacro %}

{#- post-hook: this model has now consumed every row of `upstream` -#}
{% macro mark_loaded(upstream) -%}
    insert into {{ load_state_relation() }} (model_name, upstream_name, loaded_through, updated_at)
    select '{{ this.identifier }}', '{{ upstream.identifier }}', coalesce(max(load_id), -1), now()
    from {{ upstream }}
    on conflict (model_name, upstream_name)
    do update set loaded_through = excluded.loaded_through, updated_at = excluded.updated_at
{%- endmacro %}

{#- pre-hook of the models that hold several rows per record (keys, pairs): delete the rows of
    records rewritten since this model's last run, unless the record is new (then it has none).
    `columns` are the record-uid columns of the model's rows. The rewritten records are counted
    into an analyzed temp table first: planned against the load-id sub-query, the planner takes
    a third of all records for it and scans the whole table (at 1M leads, 100 edited leads cost
    4.2 s hash-joining all 11M pairs; with the count, index lookups: 0.24 s). -#}
{% macro delete_rows_of_rewritten_records(relation, columns, skip_pruned=false) -%}
    {%- set usable = ref('int_identity__records_usable') -%}
    drop table if exists pg_temp.rewritten_records;
    create temp table rewritten_records on commit drop as
    select record_uid from {{ usable }}
    where load_id > {{ loaded_through(usable) }} and not is_new
    {%- if skip_pruned %}
        -- the records whose kept keys the records' own run deleted (prune_blocking_keys)
        and load_id is distinct from (
            select loaded_through from {{ load_state_relation() }}
            where model_name = '{{ this.identifier }}' and upstream_name = '{{ pruned_state_name() }}'
        )
    {%- endif %};
    analyze rewritten_records;
    {%- for column in columns %}
    delete from {{ relation }}
    where {{ column }} in (select record_uid from rewritten_records);
    {%- endfor %}
{%- endmacro %}


{#- The record_uid of every record an incremental run of int_identity__records_usable writes:
    those int_identity__records loaded since its last run, and those holding a value whose
    shared status flipped since (int_identity__shared_identifiers). One select, used by the
    model and by its pre-hook (prune_blocking_keys), so both mean the same records. -#}
{% macro records_usable_rewrites() -%}
with flipped as (
    select identifier_type, identifier_value
    from {{ ref('int_identity__shared_identifiers') }}
    where load_id > {{ loaded_through(ref('int_identity__shared_identifiers')) }}
)

select record_uid from {{ ref('int_identity__records') }}
where load_id > {{ loaded_through(ref('int_identity__records')) }}
{%- for type, column in [('phone', 'phone'), ('document', 'document_number'), ('email', 'email'), ('plate', 'plate')] %}
union
select records.record_uid
from {{ ref('int_identity__records') }} as records
inner join flipped
    -- by the records' partial index on the column, in byte order (partial_indexes)
    on flipped.identifier_type = '{{ type }}' and records.{{ column }} collate "C" = flipped.identifier_value
{%- endfor %}
{%- endmacro %}

{#- The blocking keys of rewritten records, deleted by index.

    A record rewritten since the keys were made (an edited lead or driver, a lead a claim comes
    to name, a deletion, a value whose shared status flipped) has keys made from its old values,
    and they must go. The keys table has no index by record (at 1M leads that index would take
    41M entries, built with every full build and written by every hourly run), so finding them
    by record_uid reads the whole table: 2.3 GB and 2.5-5.9 s at 1M leads, in every run that
    rewrites a single record. A key is found by its index, (key_hash, record_uid), once its
    value is known: and the old values are still in int_identity__records_usable until that
    model rewrites the record. So its pre-hook (incremental runs) works the old keys out from
    the rows it is about to replace and deletes them by index, in its own transaction, and notes
    the load id of its run (`pruned_state_name`): the keys' pre-hook then leaves the records of
    that load id alone (delete_rows_of_rewritten_records with skip_pruned).

    Only when the kept keys were made from exactly the rows the model holds now: the keys have
    consumed every one of its rows (their mark, identity_load_state) and were made by the blocking
    definition of now. Otherwise (the keys' last run failed or was not selected since the last
    rewrite, or the definition changed), nothing is deleted here and the keys' pre-hook finds
    those records' keys by reading the table as before. -#}
{#- SQL: whether the replaced records are few enough for their keys to be looked up (the
    pre-hook's temp table replaced_records): about 27 keys a record, each a lookup of ~11 us
    into an index mostly out of shared buffers, against a pass over the whole table at ~8.5 us
    a page (measured at 1M leads: 20,000 records took 6.0 s by lookups; the pass 2.5-5.9 s over
    295k pages, docs/benchmark.md, round 21). More than one record per
    `blocking_keys_lookup_pages_per_record` (35) pages of keys: the keys' pre-hook does the pass. -#}
{% macro prune_records_few(keys) -%}
    {%- set pages = var('blocking_keys_lookup_pages_per_record', 35) -%}
    {%- if pages is not number or pages < 0 -%}
        {{ exceptions.raise_compiler_error("blocking_keys_lookup_pages_per_record is '" ~ pages ~ "': a number of at least 0") }}
    {%- endif -%}
    (select count(*) from replaced_records) * {{ pages }} <= (select relpages from pg_class where oid = {{ relation_regclass(keys) }})
{%- endmacro %}

{% macro pruned_state_name() -%}pruned by int_identity__records_usable{%- endmacro %}

{#- the blocking keys' relation, from the graph (a ref here would make the keys an upstream of
    the model whose hook calls it: a cycle) -#}
{% macro blocking_keys_relation() -%}
    {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.name == 'int_identity__blocking_keys' -%}
        {{- return(api.Relation.create(database=node.database, schema=node.schema, identifier=node.alias)) -}}
    {%- endfor -%}
    {{- return(none) -}}
{%- endmacro %}

{#- pre-hook of int_identity__records_usable (incremental runs); `rewritten` selects the
    record_uid of every record the model's run writes (new ones included: they have no row
    here yet, hence no key) -#}
{% macro prune_blocking_keys(rewritten) -%}
    {%- set keys = blocking_keys_relation() -%}
    {%- set current = false -%}
    {%- if execute and keys is not none -%}
        {%- set state = load_state_relation() -%}
        {%- set found = run_query(
            "select " ~ relation_regclass(keys) ~ " is not null"
            ~ " and exists (select from " ~ state ~ " where model_name = '" ~ keys.identifier ~ "'"
            ~ "   and upstream_name = 'definition:" ~ blocking_definition_fingerprint() ~ "')"
            ~ " and coalesce((select loaded_through from " ~ state ~ " where model_name = '" ~ keys.identifier ~ "'"
            ~ "   and upstream_name = '" ~ this.identifier ~ "'), -2)"
            ~ "   >= coalesce((select max(load_id) from " ~ this ~ "), -1)"
        ) -%}
        {%- set current = found.rows[0][0] -%}
    {%- endif -%}
    {%- if current %}
    drop table if exists pg_temp.replaced_records;
    create temp table replaced_records on commit drop as
    select kept.record_uid, kept.phone, kept.document_number, kept.email, kept.plate, kept.claim_driver_id,
        kept.name_tokens, kept.name_signature
    from {{ this }} as kept
    where not kept.is_deleted and kept.record_uid in ({{ rewritten }});
    drop table if exists pg_temp.replaced_keys;
    create temp table replaced_keys on commit drop as
    select old_keys.record_uid, {{ blocking_key_hash('old_keys.key_type', 'old_keys.key_value') }} as key_hash
    from (
        {{ blocking_key_rows('replaced_records') | indent(8) }}
    ) as old_keys
    where {{ prune_records_few(keys) }};
    analyze replaced_keys;
    -- one index lookup per key: the planner would rather hash the whole table for a few thousand
    set local enable_hashjoin = off;
    set local enable_mergejoin = off;
    set local enable_memoize = off;
    delete from {{ keys }} as keys
    using replaced_keys as old
    where keys.key_hash = old.key_hash and keys.record_uid = old.record_uid;
    reset enable_hashjoin;
    reset enable_mergejoin;
    reset enable_memoize;
    insert into {{ load_state_relation() }} (model_name, upstream_name, loaded_through, updated_at)
    select '{{ keys.identifier }}', '{{ pruned_state_name() }}', {{ current_load_id() }}, now()
    where {{ prune_records_few(keys) }}
    on conflict (model_name, upstream_name)
    do update set loaded_through = excluded.loaded_through, updated_at = excluded.updated_at
    {%- else %}
    select 'the blocking keys are not current: their pre-hook deletes the rewritten records'' keys'
    {%- endif %}
{%- endmacro %}

{#- pre-hook of the identity models: memory for this model's transaction only, and the
    transaction's load id (current_load_id) -#}
{% macro identity_session_settings() -%}
    set local work_mem = {{ "'" ~ (var('identity_work_mem') | string | replace("'", "")) ~ "'" }};
    set local maintenance_work_mem = {{ "'" ~ (var('identity_maintenance_work_mem') | string | replace("'", "")) ~ "'" }};
    select set_config('fleet_identity.load_id', pg_current_xact_id()::text, true)
{%- endmacro %}

{#- SQL for the regclass of dbt relation `relation` (null when it does not exist): its schema and
    name as literals, quoted as identifiers by format('%I') -#}
{% macro relation_regclass(relation) -%}
    to_regclass(format('%I.%I', {{ "'" ~ (relation.schema | replace("'", "''")) ~ "'" }},
                                {{ "'" ~ (relation.identifier | replace("'", "''")) ~ "'" }}))
{%- endmacro %}

{#- identity_candidates, full build: read the keys in (key_hash, record_uid) order from their
    index alone, or else sort them (in memory, with the var candidates_full_build_work_mem: 99.5 s
    -> 84.5 s for the query at 1M leads), but never walk the index reading the heap, which reads
    41M heap rows in random order at 1M leads (110 s against 17 s for the sort). Postgres
    considers an index-only scan only where index scans are on, and a plain index scan is then
    on too: both are turned on only when nearly every page of the keys `keys` is all-visible
    (the blocking keys model vacuums after every build; the empty pages a bulk insert leaves at
    the end of the table are not, and hold no key), so the index-only walk reads no heap page;
    at 1M leads it takes the query from 53.3 s to 36.7 s (docs/benchmark.md, round 16).
    Otherwise (the vacuum could not mark the pages: a transaction older than the keys was
    open) they stay off and the keys are sorted. Run on every core where the planner can
    (parallel_full_build_settings: measured on 2 cores, 90 s -> 75 s for the whole build of the
    sort-based plan); and join the blocks to their pair positions by hashing the positions
    (macros/blocking_keys.sql block_pair_positions): the planner otherwise sorts the 9.1M blocks
    by size for a merge join, on disk (102 s against 83 s for the query at 1M leads), and,
    before anything has analyzed the new keys (a full build reads them right after making
    them), it takes the 9.1M blocks for 22 rows and joins them to the 10,660 positions by a
    nested loop: 10,660 x 9.1M comparisons, still running after 10 minutes at 1M leads. Merge
    joins and nested loops are off. The pairs are merged (a pair that shares several keys is one
    row, its key types or-ed together) by sorting them, not in a hash table: at 1M leads 14.3M
    rows into 12.1M pairs, the hash table's 16.5 s against 12 s for an in-memory sort and a
    grouping, and the pairs then go into the table in the order of its unique index, which
    builds in 2.7-2.9 s instead of 5.0-5.7 s (the model 63.6 / 65.3 s -> 52.6 / 51.4 s,
    alternated on one database, docs/benchmark.md round 19). Transaction-local. -#}
{% macro candidate_full_build_settings(keys) -%}
    set local enable_indexscan = off;
    select set_config('enable_indexscan', 'on', true)
    from pg_class as stored
    where stored.oid = {{ relation_regclass(keys) }}
        and stored.relpages > 0 and stored.relallvisible >= 0.9 * stored.relpages;
    set local enable_bitmapscan = off;
    set local enable_mergejoin = off;
    set local enable_nestloop = off;
    set local enable_hashagg = off;
    {%- set work_mem = var('candidates_full_build_work_mem', none) %}
    {%- if work_mem is not none %}
    {%- if not modules.re.fullmatch('[0-9]+ ?(kB|MB|GB|TB)?', work_mem | string) %}
    {{ exceptions.raise_compiler_error("candidates_full_build_work_mem is '" ~ work_mem ~ "': a Postgres memory size such as 1GB or 512MB, or null for the server's work_mem") }}
    {%- endif %}
    set local work_mem = '{{ work_mem }}';
    {%- endif %}
    {{ parallel_full_build_settings() }}
{%- endmacro %}

{#- Full builds of int_identity__blocking_keys and identity_candidates: let the planner run
    them in parallel. Their row estimates are absurd (generate_series over a column is taken as
    1000 rows, three nested ones as 10^9 per record), which prices moving rows through a Gather
    or Gather Merge far above the work, so without this they run on one core (measured on 2
    cores: the key query 55 s serial, 23 s parallel, its create-table-as 68 s against 36 s).
    Transaction-local. -#}
{% macro parallel_full_build_settings() -%}
    set local parallel_tuple_cost = 0
{%- endmacro %}

{#- Full build of int_identity__shared_identifiers: count each identifier value's records by
    hashing, not by sorting. Nearly every value is held by one record, so the workers' partial
    counts hardly shrink the rows (4.1M identifiers -> 3.7M groups at 1M leads), and the planner
    sorts those 3.7M (type, value) groups by collation to merge the workers' counts: 10.2 s for
    the query, 8.9 s for the model. Merged in a hash table instead (its `work_mem` is
    identity_work_mem, 1GB by default; a smaller one spills to disk in batches): 6.0 s.
    Transaction-local: it only steers how the create-table-as is planned. -#}
{% macro hashed_full_build_settings() -%}
    set local enable_sort = off
{%- endmacro %}

{#- How blocking keys and pairs are made, as a fingerprint: the key query (its key types and
    vars: max_fuzzy_identifier_length, name token limits), the key hash, the block bounds and the one-deletion
    name filter. Kept keys and pairs were made by one definition; an incremental run under
    another would mix two (new records keyed one way, looking up blocks keyed the other). -#}
{% macro blocking_definition_fingerprint() -%}
    {{ return(local_md5(
        blocking_key_rows('records') ~ '|' ~ blocking_key_hash('t', 'v') ~ '|' ~ (blocking_block_bounds() | string)
        ~ '|' ~ fuzzy_blocking_key_codes() ~ '|' ~ fuzzy_names_compatible('l', 'r')
    )) }}
{%- endmacro %}

{#- How int_identity__records hashes a raw row (macros/row_hash.sql): the stored hashes were
    made one way; compared with hashes made another, every raw row would look changed. -#}
{% macro row_hash_definition_fingerprint() -%}
    {{ return(local_md5(row_hash(['first_column', 'second_column']))) }}
{%- endmacro %}

{#- pre-hook of an incremental model whose kept rows depend on how they were made, incremental
    runs only: stop unless the kept rows were made by the definition `fingerprint` (an upgrade
    that changed it, or a changed var); a full refresh rebuilds them, and nothing is written
    before this check. `what` names the rows in the message. -#}
{% macro check_definition(fingerprint, what) -%}
    do $check$ begin
        if not exists (
            select from {{ load_state_relation() }}
            where model_name = '{{ this.identifier }}'
                and upstream_name = 'definition:{{ fingerprint }}'
        ) then
            raise exception '{{ what }} are defined differently from when the kept ones were built (a new version, or a changed var): rebuild the identity models once with `matcher dbt run --full-refresh` (the matcher''s own tables are kept; docs/runbook.md)';
        end if;
    end $check$
{%- endmacro %}

{#- post-hook of the same model: the kept rows are made by the definition `fingerprint` -#}
{% macro mark_definition(fingerprint) -%}
    {%- set definition = 'definition:' ~ fingerprint %}
    delete from {{ load_state_relation() }}
    where model_name = '{{ this.identifier }}' and upstream_name like 'definition:%'
        and upstream_name <> '{{ definition }}';
    insert into {{ load_state_relation() }} (model_name, upstream_name, loaded_through, updated_at)
    values ('{{ this.identifier }}', '{{ definition }}', 0, now())
    on conflict (model_name, upstream_name) do nothing
{%- endmacro %}

{% macro check_blocking_definition() -%}
    {{ check_definition(blocking_definition_fingerprint(), 'the blocking keys') }}
{%- endmacro %}

{% macro mark_blocking_definition() -%}
    {{ mark_definition(blocking_definition_fingerprint()) }}
{%- endmacro %}


{#- int_identity__blocking_keys is an unlogged table (its header says why): a crash leaves it
    empty while the records it was made from are still there. True then, at compile time of an
    incremental run, and the run keys every live record again (said in the log); false when the
    table holds keys, or when there is no live record to key. -#}
{% macro blocking_keys_lost() -%}
    {%- if not execute -%}{{ return(false) }}{%- endif -%}
    {%- set usable = ref('int_identity__records_usable') -%}
    {%- set found = run_query(
        "select not exists (select from " ~ this ~ ") and exists (select from " ~ usable ~ " where not is_deleted)"
    ) -%}
    {%- set lost = found.rows[0][0] -%}
    {%- if lost -%}
        {{ log(this ~ " is empty while records are loaded (an unlogged table after a crash): every live record is keyed again", info=true) }}
    {%- endif -%}
    {{ return(lost) }}
{%- endmacro %}


{#- post-hook of an incremental model, outside its transaction (a vacuum cannot run in one):
    mark the pages the run appended all-visible. The keys' index answers a block lookup alone
    only for rows on all-visible pages; every row appended since the last vacuum costs a visit
    to its heap page instead (autovacuum comes after 20% of the table has been inserted: 8M keys
    at 1M leads). Measured at 1M leads, 10k new leads: 365k heap visits in the 262k block
    lookups, 4.1 s -> 2.7 s for the pair query, for a vacuum of 0.4 s that reads only the pages
    not yet all-visible. Without index cleanup: the dead rows of rewritten records stay in the
    index until autovacuum, and the run never waits for a pass over a 1.6 GB index.
    A vacuum cannot mark a page all-visible while a transaction that may not see its rows yet
    is open: one whose snapshot or own id is older than the model's transaction. Autovacuum's
    analyze of a table the run just made is one (at 1M leads it analyzes the records while the
    keys are built), another dbt thread's model or a dashboard query others. The vacuum would
    then leave the keys' pages as they were, and identity_candidates' full build sorts 41M keys
    instead of walking their index (candidate_full_build_settings): measured in a benchmark,
    45.2 s against 26 s. So the vacuum first waits for those transactions to end, for at most
    `vacuum_appended_wait_seconds` when the table is mostly new pages (a full build; an
    incremental run, whose lookups would lose about a second, waits at most a tenth of that),
    and says so in the log. -#}
{% macro vacuum_appended(relation) -%}
    {%- if execute -%}
        {%- set limit = var('vacuum_appended_wait_seconds', 60) | float -%}
        {#- a whole build leaves no page all-visible yet (is_incremental() says true in a post-hook) -#}
        {%- set marked = run_query("select relallvisible >= relpages / 2 from pg_class where oid = " ~ relation_regclass(relation)) -%}
        {%- if marked.rows and marked.rows[0][0] -%}{%- set limit = limit / 10 -%}{%- endif -%}
        {%- set older = older_transactions_query() -%}
        {%- set found = run_query("select count(*) from (" ~ older ~ ") as older") -%}
        {%- if found.rows[0][0] > 0 and limit > 0 -%}
            {{ log(this ~ ": waiting up to " ~ limit ~ " s for " ~ found.rows[0][0] ~ " transaction(s) older than its rows to end, so its vacuum can mark them all-visible", info=true) }}
            {%- set waited -%}
                /* vacuum_appended: waiting for older transactions */
                do $wait$
                declare
                    deadline timestamptz := clock_timestamp() + interval '{{ limit }} seconds';
                begin
                    loop
                        perform pg_stat_clear_snapshot();
                        exit when not exists ({{ older }}) or clock_timestamp() >= deadline;
                        perform pg_sleep(0.05);
                    end loop;
                end $wait$
            {%- endset -%}
            {%- do run_query(waited) -%}
            {%- set left = run_query("select count(*) from (" ~ older ~ ") as older").rows[0][0] -%}
            {%- if left > 0 -%}
                {{ log(this ~ ": " ~ left ~ " older transaction(s) still open; vacuuming anyway (the pages they may not see stay as they are)", info=true) }}
            {%- endif -%}
        {%- endif -%}
    {%- endif %}
    vacuum (index_cleanup off) {{ relation }}
{%- endmacro %}

{#- the other sessions of this database whose snapshot or transaction id is older than the
    transaction that last wrote this model (the one that stamped its load-state rows) -#}
{% macro older_transactions_query() -%}
    select activity.pid
    from pg_stat_activity as activity,
        (select state.xmin as written
         from {{ load_state_relation() }} as state
         where state.model_name = '{{ this.identifier }}'
         order by state.updated_at desc
         limit 1) as model
    where activity.pid <> pg_backend_pid()
        and activity.datname = current_database()
        and (age(activity.backend_xmin) >= age(model.written) or age(activity.backend_xid) >= age(model.written))
{%- endmacro %}


{#- post-hook: an index on each of `columns` of `relation` over its non-null rows, made when the
    table has no such index (a full build, or the first run after an upgrade that added it; an
    index of someone's own on the column, over other rows, does not count); otherwise a look at
    the catalog. dbt's `indexes` config makes its indexes only when it builds the table
    whole, and has no partial ones: most values of an identifier column are null for some
    channels, and an equality lookup never needs them. Looked up by the hourly run's few
    thousand values (int_identity__shared_identifiers, int_identity__name_frequency). At 1M
    leads the five indexes take 8.7-8.8 s to build, once, and spare every hourly run a pass
    over 1.5M records in each of those two models (docs/benchmark.md, round 15).
    In byte order (collate "C"): the lookups only ask for equal values, which are equal in any
    deterministic collation, and comparing bytes instead of the database's collation builds
    each index in less than half the time (at 1M leads, the records' phones 1.2 s -> 0.5 s). A
    lookup names the collation (`column collate "C" = value`), or the planner does not use the
    index. An index of the same shape in another collation (made by an earlier version) is
    dropped once its replacement is there. -#}
{% macro partial_indexes(relation, columns) -%}
    do $partial_indexes$
    declare
        target regclass := {{ relation_regclass(relation) }};
        bytewise oid := (select c.oid from pg_collation c
                         where c.collname = 'C' and c.collnamespace = 'pg_catalog'::regnamespace);
        indexed text;
        replaced regclass;
    begin
        foreach indexed in array array[{% for column in columns %}'{{ column }}'{{ ', ' if not loop.last }}{% endfor %}]::text[] loop
            if not exists (
                select from pg_index i
                join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                where i.indrelid = target and i.indnatts = 1 and a.attname = indexed
                    and i.indcollation[0] = bytewise and i.indexprs is null
                    and pg_get_expr(i.indpred, i.indrelid) = format('(%s IS NOT NULL)', quote_ident(indexed))
            ) then
                execute format('create index on %s (%I collate "C") where %I is not null', target, indexed, indexed);
            end if;
            for replaced in
                select i.indexrelid::regclass from pg_index i
                join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                where i.indrelid = target and i.indnatts = 1 and a.attname = indexed
                    and i.indcollation[0] <> bytewise and i.indexprs is null and not i.indisunique
                    and pg_get_expr(i.indpred, i.indrelid) = format('(%s IS NOT NULL)', quote_ident(indexed))
            loop
                execute format('drop index %s', replaced);
            end loop;
        end loop;
    end $partial_indexes$
{%- endmacro %}
