{{ config(
    materialized='incremental',
    unique_key='record_uid',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    indexes=[
        {'columns': ['record_uid']},
        {'columns': ['load_id']},
    ],
    pre_hook=["{% if is_incremental() %}{{ check_definition(row_hash_definition_fingerprint(), 'the raw row hashes') }}{% endif %}"],
    post_hook=[
        "{{ mark_definition(row_hash_definition_fingerprint()) }}",
        "{{ partial_indexes(this, ['phone', 'document_number', 'email', 'plate']) }}",
    ],
) }}
-- One row per person record of every channel, in one shape: the unit the matcher resolves.
-- depends_on: {{ ref('int_identity__claim_attributions') }} (claim attributions, below)
--
-- Incremental: a run re-normalizes only the raw rows whose `raw_hash` is new (new or changed
-- rows), and turns records whose raw row is gone into tombstones (`is_deleted`, identifiers
-- null) so that the models below learn of the deletion. Every written row carries the run's
-- `load_id` (see macros/incremental_state.sql). Consumers filter `not is_deleted`. The kept
-- raw hashes were made by one definition (macros/row_hash.sql): an incremental run under
-- another stops before writing anything (check_definition) until a full refresh.

{%- set channels = [
    {'table': 'cabinet_leads', 'model': 'stg_raw__cabinet_leads', 'pk': 'lead_id', 'kind': 'lead', 'tag': 'cabinet_lead'},
    {'table': 'scout_registrations', 'model': 'stg_raw__scout_registrations', 'pk': 'registration_id', 'kind': 'lead', 'tag': 'scout_registration'},
    {'table': 'fleet_migrations', 'model': 'stg_raw__fleet_migrations', 'pk': 'migration_id', 'kind': 'lead', 'tag': 'fleet_migration'},
    {'table': 'drivers', 'model': 'stg_raw__drivers', 'pk': 'driver_id', 'kind': 'driver', 'tag': 'driver_direct'},
] %}

{#- A lead named by claims (int_identity__claim_attributions) carries the driver they name it
    for, as `claim_driver_id`; a driver carries its own id there, so the two share a blocking
    key. The attribution is part of the lead's `raw_hash` (only when there is one: a lead no
    claim names keeps its row's own hash) and of its `fingerprint`, so a claim that names a lead
    already loaded makes it a changed record, and the matcher tries it again
    (macros/claim_attribution.sql). #}

with

{#- Incremental: which raw rows are new or changed, and which loaded records lost their raw row,
    is asked first, in one query over keys and raw hashes only (cheap: nothing is normalized):
    every channel's (source_table, source_pk, raw_hash) full-joined once with the loaded
    records. The answer is written into the query below as constant arrays: Postgres then filters each raw table
    with a hash lookup *before* the staging view normalizes anything, and finds the vanished
    records by index. (Joining to the keys instead makes it normalize every raw row first; an
    array from a subquery is searched linearly.) Above `incremental_inline_keys_limit` changes
    in all, the plain anti-joins are used. -#}
{%- set changed_keys = {} -%}
{%- set vanished_uids = [] -%}
{%- set inline = {'ok': false} -%}
{%- if is_incremental() and execute -%}
    {%- set detect_query -%}
        with raw as (
            {% for c in channels %}
            select
                '{{ c.table }}'::text as source_table,
                staged.{{ c.pk }} as source_pk,
                {{ claim_attributed_hash(c) }} as raw_hash
            from {{ ref(c.model) }} as staged
            {{- claim_attribution_join(c) | indent(12) }}
            where staged.{{ c.pk }} is not null
            {% if not loop.last %}union all{% endif %}
            {% endfor %}
        ),

        loaded as (
            select record_uid, source_table, source_pk, raw_hash from {{ this }} where not is_deleted
        )

        -- a raw row with no live record of the same raw hash is new or changed; a live record
        -- with no raw row is gone. Matched on the raw key itself, not on the record_uid it
        -- derives (an md5 per raw row: at 1M leads 2.45-2.60 s -> 1.98-2.14 s for this query)
        select raw.source_table, raw.source_pk, loaded.record_uid as vanished_uid
        from raw
        full join loaded on loaded.source_pk = raw.source_pk and loaded.source_table = raw.source_table
        where raw.source_pk is null
            or loaded.record_uid is null
            or loaded.raw_hash is distinct from raw.raw_hash
        limit {{ var('incremental_inline_keys_limit') + 1 }}
    {%- endset -%}
    {%- set found = run_query(detect_query) -%}
    {%- if found.rows | length <= var('incremental_inline_keys_limit') -%}
        {%- do inline.update({'ok': true}) -%}
        {%- for row in found.rows -%}
            {%- if row[0] is none -%}
                {%- do vanished_uids.append(row[2]) -%}
            {%- else -%}
                {%- do changed_keys.setdefault(row[0], []).append(row[1]) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endif %}

{% for c in channels %}
{{ c.table }} as (
    select
        {{ record_uid("'" ~ c.table ~ "'::text", 'staged.' ~ c.pk) }} as record_uid,
        '{{ c.table }}'::text as source_table,
        staged.{{ c.pk }} as source_pk,
        '{{ c.kind }}'::text as record_kind,
        '{{ c.tag }}'::text as origin_tag,
        staged.event_at,
        staged.phone,
        staged.phone_invalid_reason,
        staged.document_number,
        staged.email,
        staged.plate,
        staged.full_name,
        staged.name_sorted,
        {{ claim_driver_column(c) }} as claim_driver_id,
        {{ claim_attributed_hash(c) }} as raw_hash
    from {{ ref(c.model) }} as staged
    {{- claim_attribution_join(c) | indent(4) }}
    where staged.{{ c.pk }} is not null
    {%- if is_incremental() %}
        {%- set keys = changed_keys.get(c.table, []) %}
        {%- if inline.ok %}
        -- {{ keys | length }} new or changed rows
        and staged.{{ c.pk }} = any (array[{% for k in keys %}'{{ k | replace("'", "''") }}'{% if not loop.last %}, {% endif %}{% endfor %}]::text[])
        {%- else %}
        and not exists (
            select 1 from {{ this }} as loaded
            where loaded.record_uid = {{ record_uid("'" ~ c.table ~ "'::text", 'staged.' ~ c.pk) }}
                and loaded.raw_hash = {{ claim_attributed_hash(c) | indent(16) }}
                and not loaded.is_deleted
        )
        {%- endif %}
    {%- endif %}
),
{% endfor %}

changed as (
    {% for c in channels %}
    select * from {{ c.table }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

live as (
    select
        record_uid,
        source_table,
        source_pk,
        record_kind,
        origin_tag,
        event_at,
        phone,
        phone_invalid_reason,
        document_number,
        email,
        plate,
        full_name,
        name_sorted,
        claim_driver_id,
        -- a lead's attribution only where it has one: the fingerprints of the others are as before
        md5(concat_ws('|', phone, document_number, email, plate, full_name, event_at::text)
            || case when record_kind = 'lead' and claim_driver_id is not null then '|claim:' || claim_driver_id else '' end)
            as fingerprint,
        raw_hash,
        false as is_deleted
    from changed
),

{% if is_incremental() %}
{% if not inline.ok %}
raw_keys as (
    {% for c in channels %}
    select '{{ c.table }}'::text as source_table, {{ c.pk }} as source_pk from {{ ref(c.model) }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),
{% endif %}

vanished as (
    -- a record whose raw row is gone becomes a tombstone
    select
        loaded.record_uid,
        loaded.source_table,
        loaded.source_pk,
        loaded.record_kind,
        loaded.origin_tag,
        loaded.event_at,
        null::text as phone,
        null::text as phone_invalid_reason,
        null::text as document_number,
        null::text as email,
        null::text as plate,
        null::text as full_name,
        null::text as name_sorted,
        null::text as claim_driver_id,
        null::text as fingerprint,
        null::bigint as raw_hash,
        true as is_deleted
    from {{ this }} as loaded
    where not loaded.is_deleted
    {%- if inline.ok %}
        -- {{ vanished_uids | length }} records whose raw row is gone
        and loaded.record_uid = any (array[{{ vanished_uids | join(', ') }}]::bigint[])
    {%- else %}
        and not exists (
            select 1 from raw_keys
            where raw_keys.source_table = loaded.source_table and raw_keys.source_pk = loaded.source_pk
        )
    {%- endif %}
),
{% endif %}

final as (
    select *, {{ current_load_id() }} as load_id from live
    {% if is_incremental() %}
    union all
    select *, {{ current_load_id() }} as load_id from vanished
    {% endif %}
)

select * from final
