{#- The tokens of a name sorted and space-joined, so 'perez juan' and 'juan perez' agree.
    Expects normalize_name output; tabs and line breaks are still treated as separators.
    Byte order (collate "C") so the result does not depend on the database locale. -#}
{% macro name_sorted_tokens(col) -%}
    {{ return(adapter.dispatch('name_sorted_tokens')(col)) }}
{%- endmacro %}

{% macro default__name_sorted_tokens(col) -%}
    nullif(
        array_to_string(
            array(
                select name_token
                from unnest(string_to_array(translate({{ col }}, E'\t\n\r', '   '), ' ')) as name_tokens (name_token)
                where name_token <> ''
                order by name_token collate "C"
            ),
            ' '
        ),
        ''
    )
{%- endmacro %}
