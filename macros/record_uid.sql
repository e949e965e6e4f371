{#- A stable 64-bit id for a source record: the first 16 hex digits of md5("table:pk").
    matcher/runner.py (RECORD_UID_SQL) computes the same expression; a test keeps them equal. -#}
{% macro record_uid(source_table, source_pk) -%}
    ('x' || left(md5({{ source_table }} || ':' || {{ source_pk }}), 16))::bit(64)::bigint
{%- endmacro %}
