{{ config(
    materialized='incremental',
    unique_key='record_uid',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    indexes=[
        {'columns': ['record_uid']},
        {'columns': ['load_id']},
    ],
    pre_hook=[
        "{% if is_incremental() %}{{ prune_blocking_keys(records_usable_rewrites()) }}{% endif %}",
    ],
    post_hook=[
        "{{ mark_loaded(ref('int_identity__records')) }}",
        "{{ mark_loaded(ref('int_identity__shared_identifiers')) }}",
        "{{ partial_indexes(this, ['name_sorted']) }}",
    ],
) }}
-- Records with shared identifier values removed: what blocking and scoring may rely on.
--
-- Incremental: rewrites the records that changed since the last run (tombstones included, so
-- the models below see deletions) and the records holding a value whose shared status flipped.
-- `replaced_name_sorted` keeps the name a rewritten row had before, so name frequencies can be
-- counted again for both names; `is_new` (the record was not here before) spares the models
-- below a search for keys and pairs the record cannot have yet. `name_tokens` and
-- `name_signature` are what blocking reads of the name, worked out here once per record.
-- Before it rewrites anything, an incremental run deletes the blocking keys of the records it
-- replaces, found by index from their values here (prune_blocking_keys, macros/incremental_state.sql).

with shared as (
    select identifier_type, identifier_value
    from {{ ref('int_identity__shared_identifiers') }}
    where is_shared
),

{% if is_incremental() %}

todo as (
    {{ records_usable_rewrites() | indent(4) }}
),

records as (
    select records.*
    from {{ ref('int_identity__records') }} as records
    inner join todo on todo.record_uid = records.record_uid
),

{% else %}

records as (
    select * from {{ ref('int_identity__records') }}
),

{% endif %}

flagged as (
    select
        records.*,
        shared_phone.identifier_value is not null as phone_is_shared,
        shared_document.identifier_value is not null as document_is_shared,
        shared_email.identifier_value is not null as email_is_shared,
        shared_plate.identifier_value is not null as plate_is_shared
    from records
    left join shared as shared_phone
        on shared_phone.identifier_type = 'phone' and shared_phone.identifier_value = records.phone
    left join shared as shared_document
        on shared_document.identifier_type = 'document' and shared_document.identifier_value = records.document_number
    left join shared as shared_email
        on shared_email.identifier_type = 'email' and shared_email.identifier_value = records.email
    left join shared as shared_plate
        on shared_plate.identifier_type = 'plate' and shared_plate.identifier_value = records.plate
),

tokenized as (
    -- the name's tokens and signature in one pass over its tokens (macros/blocking_keys.sql)
    select flagged.*, name_keys.name_tokens, name_keys.name_signature
    from flagged
    cross join lateral (
        {{ name_keys('flagged.name_sorted') | indent(8) }}
    ) as name_keys
),

final as (
    select
        flagged.record_uid,
        flagged.source_table,
        flagged.source_pk,
        flagged.record_kind,
        flagged.origin_tag,
        flagged.event_at,
        flagged.fingerprint,
        case when not flagged.phone_is_shared then flagged.phone end as phone,
        case when not flagged.document_is_shared then flagged.document_number end as document_number,
        case when not flagged.email_is_shared then flagged.email end as email,
        case when not flagged.plate_is_shared then flagged.plate end as plate,
        flagged.full_name,
        flagged.name_sorted,
        -- the driver claims name this lead for, or a driver's own id (never shared: a block bound caps it)
        flagged.claim_driver_id,
        -- what blocking reads of the name (macros/blocking_keys.sql), worked out once per record
        flagged.name_tokens,
        flagged.name_signature,
        (flagged.phone_is_shared or flagged.document_is_shared or flagged.email_is_shared or flagged.plate_is_shared)
            as has_shared_identifier,
        flagged.is_deleted,
        {% if is_incremental() -%}
        previous.name_sorted as replaced_name_sorted,
        previous.record_uid is null as is_new,
        {%- else -%}
        null::text as replaced_name_sorted,
        false as is_new,
        {%- endif %}
        {{ current_load_id() }} as load_id
    from tokenized as flagged
    {% if is_incremental() -%}
    left join {{ this }} as previous on previous.record_uid = flagged.record_uid
    {%- endif %}
)

select * from final
