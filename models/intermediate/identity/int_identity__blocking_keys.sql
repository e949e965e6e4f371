-- Blocking keys per record; two records sharing a key become a candidate pair.
-- Exact keys on each identifier; one-deletion keys on phone and document, so a single
-- substitution, transposition, insertion or deletion still meets its twin; and unordered
-- pairs of name tokens (robust to swapped order, a missing second surname, one typo in a
-- name of three or more tokens) and the whole name of 3+ tokens. Blocks above the size
-- bound are dropped, never expanded.

with records as (
    select * from {{ ref('int_identity__records_usable') }}
),

exact_keys as (
    select record_uid, 'phone'::text as key_type, phone as key_value from records where phone is not null
    union all
    select record_uid, 'document', document_number from records where document_number is not null
    union all
    select record_uid, 'email', email from records where email is not null
    union all
    select record_uid, 'plate', plate from records where plate is not null
),

phone_deletions as (
    select records.record_uid, 'phone_fuzzy'::text as key_type,
        left(records.phone, position - 1) || substr(records.phone, position + 1) as key_value
    from records
    cross join lateral generate_series(1, length(records.phone)) as position
    where records.phone is not null
),

document_deletions as (
    select records.record_uid, 'document_fuzzy'::text as key_type,
        left(records.document_number, position - 1) || substr(records.document_number, position + 1) as key_value
    from records
    cross join lateral generate_series(1, length(records.document_number)) as position
    where records.document_number is not null
    union all
    -- the whole value too: "Q12345678" minus its "Q" meets "12345678" itself
    select record_uid, 'document_fuzzy', document_number from records where document_number is not null
),

name_tokens as (
    select records.record_uid, token
    from records
    cross join lateral unnest(string_to_array(records.name_sorted, ' ')) as token
    where records.name_sorted is not null
        and length(token) > 1
        and token not in ('de', 'del', 'la', 'las', 'los', 'y', 'da', 'das', 'do', 'dos', 'van', 'von', 'di')
),

name_pairs as (
    select a.record_uid, 'name_pair'::text as key_type, a.token || ' ' || b.token as key_value
    from name_tokens as a
    inner join name_tokens as b on a.record_uid = b.record_uid and a.token < b.token
),

full_names as (
    -- the whole sorted name, when it has 3+ tokens: far rarer than any pair of its tokens, so
    -- it still blocks where a common pair ("jose quispe") exceeds the bound
    select record_uid, 'name_full'::text as key_type, string_agg(token, ' ' order by token collate "C") as key_value
    from name_tokens
    group by record_uid
    having count(*) >= 3
),

all_keys as (
    select * from exact_keys
    union
    select * from phone_deletions
    union
    select * from document_deletions
    union
    select * from name_pairs
    union
    select * from full_names
),

block_sizes as (
    select key_type, key_value, count(*) as block_size
    from all_keys
    group by key_type, key_value
),

bounded as (
    select all_keys.record_uid, all_keys.key_type, all_keys.key_value, block_sizes.block_size::integer as block_size
    from all_keys
    inner join block_sizes using (key_type, key_value)
    where block_sizes.block_size > 1
        and block_sizes.block_size <= case
            when all_keys.key_type = 'name_pair' then {{ var('max_name_block_size') }}
            else {{ var('max_block_size') }}
        end
)

select * from bounded
