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
