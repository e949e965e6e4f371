{{ config(
    post_hook=["create index on {{ this }} (right_uid)"]
) }}
-- Candidate pairs: a pending record (left) and any record, linked or not (right), that share
-- a blocking key. When both are pending the pair appears once, with left_uid < right_uid.
-- This table and identity_pending_records are the matcher's only dbt-built input.

with records as (
    select * from {{ ref('int_identity__records_usable') }}
),

keys as (
    select * from {{ ref('int_identity__blocking_keys') }}
),

pending as (
    select record_uid from {{ ref('identity_pending_records') }}
    where precheck_fail_reason is null
),

pending_keys as (
    select keys.*
    from keys
    inner join pending using (record_uid)
),

joined as (
    select
        pending_keys.record_uid as left_uid,
        keys.record_uid as right_uid,
        pending_keys.key_type
    from pending_keys
    inner join keys
        on keys.key_type = pending_keys.key_type
        and keys.key_value = pending_keys.key_value
        and keys.record_uid <> pending_keys.record_uid
),

pairs as (
    select
        joined.left_uid,
        joined.right_uid,
        array_agg(distinct joined.key_type order by joined.key_type) as blocking_rules
    from joined
    where joined.left_uid < joined.right_uid
        or not exists (select 1 from pending where pending.record_uid = joined.right_uid)
    group by joined.left_uid, joined.right_uid
),

final as (
    select
        pairs.left_uid,
        pairs.right_uid,
        pairs.blocking_rules::text[] as blocking_rules,
        l.phone as l_phone,
        r.phone as r_phone,
        l.document_number as l_document_number,
        r.document_number as r_document_number,
        l.email as l_email,
        r.email as r_email,
        l.plate as l_plate,
        r.plate as r_plate,
        l.full_name as l_full_name,
        r.full_name as r_full_name,
        l.name_frequency as l_name_frequency,
        r.name_frequency as r_name_frequency
    from pairs
    inner join records as l on l.record_uid = pairs.left_uid
    inner join records as r on r.record_uid = pairs.right_uid
)

select * from final
