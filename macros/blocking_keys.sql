{#- The blocking keys of the records in CTE `records` (record_uid, phone, document_number,
    email, plate, name_sorted), as CTEs ending in `{{ prefix }}all_keys` (record_uid, key_type,
    key_value). int_identity__blocking_keys stores them hashed; identity_candidates builds them
    again for the few records rewritten in an incremental run, to look their blocks up.
    Keys: exact identifiers; one-deletion keys of phone and document (a single substitution,
    transposition, insertion or deletion still meets its twin; only for identifiers of at most
    `max_fuzzy_identifier_length` characters); unordered pairs of name tokens (robust to swapped
    order, a missing second surname, one typo in a name of three or more tokens), from the first
    `max_name_key_tokens` tokens, and unordered triples from the first `max_name_triple_tokens`.
    One-deletion keys carry their record's name signature (fuzzy_names_compatible). -#}
{#- name particles left out of name keys -#}
{% macro name_particles() -%}
    {{ return(['de', 'del', 'la', 'las', 'los', 'y', 'da', 'das', 'do', 'dos', 'van', 'von', 'di']) }}
{%- endmacro %}

{#- Whether two records' one-deletion key is worth a pair, from their name signatures (a
    64-bit mask with one bit per name token, by hash): the names share a token (or two tokens
    share a bit: about one pair in eight of the rest), or one record has no name. A one-edit
    identifier links only with agreeing names (phone_close_name, document_close_name), and
    agreeing names share a token but in the rarest of typo sets; random one-edit neighbours
    (at 1M records every 8-digit number has several) mostly share none. -#}
{% macro fuzzy_names_compatible(left_signature, right_signature) -%}
    coalesce(({{ left_signature }} & {{ right_signature }}) <> 0, true)
{%- endmacro %}

{% macro blocking_key_ctes(records, prefix='') -%}
{%- set particles = name_particles() %}
{%- set max_fuzzy = var('max_fuzzy_identifier_length', 20) %}
{%- set max_tokens = var('max_name_key_tokens', 8) %}
{%- set max_triple_tokens = var('max_name_triple_tokens', 6) %}
{{ prefix }}exact_keys as (
    select record_uid, {{ blocking_key_code('phone') }} as key_type, 'p:' || phone as key_value
    from {{ records }} as records where phone is not null
    union all
    select record_uid, {{ blocking_key_code('document') }}, 'd:' || document_number
    from {{ records }} as records where document_number is not null
    union all
    select record_uid, {{ blocking_key_code('email') }}, 'e:' || email
    from {{ records }} as records where email is not null
    union all
    select record_uid, {{ blocking_key_code('plate') }}, 't:' || plate
    from {{ records }} as records where plate is not null
),

{{ prefix }}deletion_keys as (
    -- deleting either of two equal neighbours gives the same string: keep one position per run
    select records.record_uid, {{ blocking_key_code('phone_fuzzy') }} as key_type,
        'pf:' || left(records.phone, position - 1) || substr(records.phone, position + 1) as key_value
    from {{ records }} as records
    cross join lateral generate_series(1, length(records.phone)) as position
    where records.phone is not null
        and length(records.phone) <= {{ max_fuzzy }}
        and substr(records.phone, position, 1) is distinct from nullif(substr(records.phone, position + 1, 1), '')
    union all
    select records.record_uid, {{ blocking_key_code('document_fuzzy') }},
        'df:' || left(records.document_number, position - 1) || substr(records.document_number, position + 1)
    from {{ records }} as records
    cross join lateral generate_series(1, length(records.document_number)) as position
    where records.document_number is not null
        and length(records.document_number) <= {{ max_fuzzy }}
        and substr(records.document_number, position, 1)
            is distinct from nullif(substr(records.document_number, position + 1, 1), '')
    union all
    -- the whole value too: "Q12345678" minus its "Q" meets "12345678" itself
    select record_uid, {{ blocking_key_code('document_fuzzy') }}, 'df:' || document_number
    from {{ records }} as records
    where document_number is not null and length(document_number) <= {{ max_fuzzy }}
),

{{ prefix }}name_tokens as (
    -- tokens of the name, particles and one-letter initials left out, in byte order; a repeated
    -- token stays (the double surname of "ivan garcia garcia" is part of who he is)
    select
        records.record_uid,
        array(
            select name_token collate "C"
            from unnest(string_to_array(records.name_sorted, ' ')) as token_list (name_token)
            where length(name_token) > 1
                and name_token not in ('{{ particles | join("', '") }}')
            order by 1
            limit {{ max_tokens }}
        ) as tokens
    from {{ records }} as records
    where records.name_sorted is not null
),

{{ prefix }}name_signatures as (
    -- one bit per distinct token (hash mod 64); null for a record without name tokens
    select record_uid,
        (select bit_or(1::bigint << (hashtextextended(token, 0) & 63)::integer) from unnest(tokens) as token)
            as name_signature
    from {{ prefix }}name_tokens
    where cardinality(tokens) > 0
),

{{ prefix }}name_keys as (
    select distinct name_tokens.record_uid, {{ blocking_key_code('name_pair') }} as key_type,
        'np:' || name_tokens.tokens[i] || ' ' || name_tokens.tokens[j] as key_value
    from {{ prefix }}name_tokens as name_tokens
    cross join lateral generate_series(1, cardinality(name_tokens.tokens)) as i
    cross join lateral generate_series(i + 1, cardinality(name_tokens.tokens)) as j
    union all
    -- every three tokens of a name of 3+ tokens (of its first {{ max_triple_tokens }}): far rarer
    -- than a pair, so it still blocks where a common pair ("jose quispe") exceeds its bound,
    -- and a 4-token name keeps a key through one typo, a dropped second given name or surname
    select distinct name_tokens.record_uid, {{ blocking_key_code('name_triple') }},
        'nt:' || name_tokens.tokens[i] || ' ' || name_tokens.tokens[j] || ' ' || name_tokens.tokens[k]
    from {{ prefix }}name_tokens as name_tokens
    cross join lateral generate_series(1, least(cardinality(name_tokens.tokens), {{ max_triple_tokens }})) as i
    cross join lateral generate_series(i + 1, least(cardinality(name_tokens.tokens), {{ max_triple_tokens }})) as j
    cross join lateral generate_series(j + 1, least(cardinality(name_tokens.tokens), {{ max_triple_tokens }})) as k
),

{{ prefix }}all_keys as (
    -- name_signature only on one-deletion keys: identity_candidates pairs their neighbours only
    -- where fuzzy_names_compatible
    select record_uid, key_type, key_value, null::bigint as name_signature
    from {{ prefix }}exact_keys
    union all
    select deletion_keys.record_uid, deletion_keys.key_type, deletion_keys.key_value,
        name_signatures.name_signature
    from {{ prefix }}deletion_keys as deletion_keys
    left join {{ prefix }}name_signatures as name_signatures
        on name_signatures.record_uid = deletion_keys.record_uid
    union all
    select record_uid, key_type, key_value, null::bigint
    from {{ prefix }}name_keys
),

{%- endmacro %}
