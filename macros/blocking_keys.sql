{#- The blocking keys of records, as one select of (record_uid, key_type, key_value,
    name_signature). int_identity__blocking_keys stores them hashed; identity_candidates builds
    them again for the few records rewritten in an incremental run, to look their blocks up.
    Keys: exact identifiers; one-deletion keys of phone, document and plate (a single substitution,
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

{#- A record's name tokens for blocking (int_identity__records_usable.name_tokens): the tokens of
    `name_sorted` without particles and one-letter initials, in byte order (name_sorted is
    already), the first `max_name_key_tokens`; a repeated token stays (the double surname of
    "ivan garcia garcia" is part of who he is). Empty for a record without a name. -#}
{% macro name_key_tokens(name_sorted) -%}
    array(
        select name_token collate "C"
        from unnest(string_to_array({{ name_sorted }}, ' ')) as token_list (name_token)
        where length(name_token) > 1
            and name_token not in ('{{ name_particles() | join("', '") }}')
        order by 1
        limit {{ var('max_name_key_tokens', 8) }}
    )
{%- endmacro %}

{#- A record's name signature: one bit per distinct token (hash mod 64); null without tokens -#}
{% macro name_signature(tokens) -%}
    (select bit_or(1::bigint << (hashtextextended(token, 0) & 63)::integer) from unnest({{ tokens }}) as token)
{%- endmacro %}

{#- True for the first of a run of equal tokens at `position` (positions from `lowest`): the
    tokens are sorted, so keeping only such positions gives every distinct pair or triple of
    token values once, a repeated token included ("garcia garcia ivan" -> "garcia garcia",
    "garcia ivan"), without a distinct over millions of keys. -#}
{% macro _first_of_run(tokens, position, lowest) -%}
    ({{ position }} = {{ lowest }} or {{ tokens }}[{{ position }} - 1] <> {{ tokens }}[{{ position }}])
{%- endmacro %}

{#- The keys of the rows of `relation` (record_uid, phone, document_number, email, plate,
    name_tokens, name_signature) that satisfy `condition`, as one union-all select of
    (record_uid, key_type, key_value, name_signature). Every branch reads `relation` itself
    and nothing is shared through a CTE or a sub-select, so a full build runs it on every core
    (a CTE scan or a correlated sub-select would keep the whole query on one). Each key of a
    record comes out once: one deletion position per run of equal characters (deleting either of
    two equal neighbours gives the same string), one position per run of equal name tokens. -#}
{% macro blocking_key_rows(relation, condition='true') -%}
{%- set max_fuzzy = var('max_fuzzy_identifier_length', 20) %}
{%- set max_triple_tokens = var('max_name_triple_tokens', 6) %}
{%- set tokens = 'records.name_tokens' %}
{%- set token_count = 'coalesce(cardinality(records.name_tokens), 0)' %}
{%- set triple_count = 'least(coalesce(cardinality(records.name_tokens), 0), ' ~ max_triple_tokens ~ ')' %}
{%- for type, column, prefix in [('phone', 'phone', 'p:'), ('document', 'document_number', 'd:'), ('email', 'email', 'e:'), ('plate', 'plate', 't:')] %}
select records.record_uid, {{ blocking_key_code(type) }} as key_type, '{{ prefix }}' || records.{{ column }} as key_value,
    null::bigint as name_signature
from {{ relation }} as records
where ({{ condition }}) and records.{{ column }} is not null
union all
{%- endfor %}
-- one deletion of phones and plates (a misread or mistyped plate character, "ABC123" /
-- "A8C123", is the commonest plate error in lead forms and scans)
{%- for type, column, prefix in [('phone_fuzzy', 'phone', 'pf:'), ('plate_fuzzy', 'plate', 'tf:')] %}
select records.record_uid, {{ blocking_key_code(type) }},
    '{{ prefix }}' || left(records.{{ column }}, position - 1) || substr(records.{{ column }}, position + 1), records.name_signature
from {{ relation }} as records
cross join lateral generate_series(1, length(records.{{ column }})) as position
where ({{ condition }}) and records.{{ column }} is not null
    and length(records.{{ column }}) <= {{ max_fuzzy }}
    and substr(records.{{ column }}, position, 1) is distinct from nullif(substr(records.{{ column }}, position + 1, 1), '')
union all
{%- endfor %}
-- position 0 is the whole value: "Q12345678" minus its "Q" meets "12345678" itself
select records.record_uid, {{ blocking_key_code('document_fuzzy') }},
    'df:' || case when position = 0 then records.document_number
        else left(records.document_number, position - 1) || substr(records.document_number, position + 1) end,
    records.name_signature
from {{ relation }} as records
cross join lateral generate_series(0, length(records.document_number)) as position
where ({{ condition }}) and records.document_number is not null
    and length(records.document_number) <= {{ max_fuzzy }}
    and (position = 0 or substr(records.document_number, position, 1)
        is distinct from nullif(substr(records.document_number, position + 1, 1), ''))
union all
select records.record_uid, {{ blocking_key_code('name_pair') }},
    'np:' || {{ tokens }}[i] || ' ' || {{ tokens }}[j], null::bigint
from {{ relation }} as records
cross join lateral generate_series(1, {{ token_count }}) as i
cross join lateral generate_series(i + 1, {{ token_count }}) as j
where ({{ condition }})
    and {{ _first_of_run(tokens, 'i', '1') }} and {{ _first_of_run(tokens, 'j', 'i + 1') }}
union all
-- every three tokens of a name of 3+ tokens (of its first {{ max_triple_tokens }}): far rarer
-- than a pair, so it still blocks where a common pair ("jose quispe") exceeds its bound,
-- and a 4-token name keeps a key through one typo, a dropped second given name or surname
select records.record_uid, {{ blocking_key_code('name_triple') }},
    'nt:' || {{ tokens }}[i] || ' ' || {{ tokens }}[j] || ' ' || {{ tokens }}[k], null::bigint
from {{ relation }} as records
cross join lateral generate_series(1, {{ triple_count }}) as i
cross join lateral generate_series(i + 1, {{ triple_count }}) as j
cross join lateral generate_series(j + 1, {{ triple_count }}) as k
where ({{ condition }})
    and {{ _first_of_run(tokens, 'i', '1') }} and {{ _first_of_run(tokens, 'j', 'i + 1') }}
    and {{ _first_of_run(tokens, 'k', 'j + 1') }}
{%- endmacro %}
