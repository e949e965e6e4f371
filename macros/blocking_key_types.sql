{#- The blocking key types, in code order: int_identity__blocking_keys stores a key's type as
    its 1-based position in this list (a smallint), identity_candidates turns codes back
    into names. Append new types at the end: codes are stored. `name_full` (the whole name of
    3+ tokens) is retired, superseded by `name_triple`; its code stays so old masks decode. -#}
{% macro blocking_key_types() -%}
    {{ return(['phone', 'document', 'email', 'plate', 'phone_fuzzy', 'document_fuzzy', 'name_pair', 'name_full', 'name_triple', 'plate_fuzzy', 'claim']) }}
{%- endmacro %}

{#- the one-deletion key types: their neighbours pair only where names can agree
    (fuzzy_names_compatible), as a SQL list of codes -#}
{% macro fuzzy_blocking_key_codes() -%}
    {%- for name in ['phone_fuzzy', 'document_fuzzy', 'plate_fuzzy'] -%}
        {{ blocking_key_code(name) }}{{ ', ' if not loop.last }}
    {%- endfor -%}
{%- endmacro %}

{#- A key as stored: a 64-bit hash of its value (`key_value` carries its type's prefix) with its
    type code in the low four bits (`key_type`: a code expression). A block is the keys of one
    hash, and its type is `key_hash & 15` (blocking_key_type_of_hash): identity_candidates' full
    build reads the blocks from the (key_hash, record_uid, name_signature) index alone, in
    order, instead of sorting every key (docs/benchmark.md, round 16). Codes must stay below 16. -#}
{% macro blocking_key_hash(key_type, key_value) -%}
    {%- if blocking_key_types() | length > 15 -%}
        {{ exceptions.raise_compiler_error('blocking_key_types has ' ~ (blocking_key_types() | length) ~ ' types: a key hash carries its type code in 4 bits (at most 15)') }}
    {%- endif -%}
    ((hashtextextended({{ key_value }}, 0) & -16) | {{ key_type }})
{%- endmacro %}

{#- the key type of a key hash (blocking_key_hash), as a smallint -#}
{% macro blocking_key_type_of_hash(key_hash) -%}
    ({{ key_hash }} & 15)::smallint
{%- endmacro %}

{#- smallint code of a key type -#}
{% macro blocking_key_code(name) -%}
    {{ blocking_key_types().index(name) + 1 }}::smallint
{%- endmacro %}

{#- the largest block (records sharing one key) each key type may expand into pairs: the name
    types their own vars, every other type `max_block_size` (key `default`) -#}
{% macro blocking_block_bounds() -%}
    {{ return({
        'name_pair': var('max_name_block_size'),
        'name_triple': var('max_name_triple_block_size', 10),
        'default': var('max_block_size'),
    }) }}
{%- endmacro %}

{#- the bound of the key type in `key_type_column`, as SQL -#}
{% macro blocking_block_bound(key_type_column) -%}
    {%- set bounds = blocking_block_bounds() -%}
    case {{ key_type_column }}
        when {{ blocking_key_code('name_pair') }} then {{ bounds['name_pair'] }}
        when {{ blocking_key_code('name_triple') }} then {{ bounds['name_triple'] }}
        else {{ bounds['default'] }}
    end
{%- endmacro %}
