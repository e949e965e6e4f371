{#- The tokens of a name sorted and space-joined, so 'perez juan' and 'juan perez' agree.
    Expects normalize_name output; tabs and line breaks are still treated as separators.
    Byte order (collate "C") so the result does not depend on the database locale. -#}
{% macro name_sorted_tokens(col) -%}
    {{ return(adapter.dispatch('name_sorted_tokens')(col)) }}
{%- endmacro %}

{#- PostgreSQL 18 sorts an array in one function call (array_sort): the same result as the
    sub-select below, and, unlike a sub-select, it lets a full build of the records normalize
    raw rows on every core. -#}
{% macro postgres__name_sorted_tokens(col) -%}
    {%- if server_version_num() >= 180000 -%}
    nullif(
        array_to_string(
            array_sort(
                array_remove(string_to_array(translate({{ col }}, E'\t\n\r', '   '), ' '), '')::text[] collate "C"
            ),
            ' '
        ),
        ''
    )
    {%- else -%}
    {{ default__name_sorted_tokens(col) }}
    {%- endif -%}
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

{#- the server's version number (180000 for 18.0); 0 while dbt parses, before it connects -#}
{% macro server_version_num() -%}
    {%- if execute -%}
        {{ return(run_query("select current_setting('server_version_num')::integer").columns[0].values()[0]) }}
    {%- else -%}
        {{ return(0) }}
    {%- endif -%}
{%- endmacro %}
