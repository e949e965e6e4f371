{#- A 64-bit hash of a source row's raw values (nulls distinguished from empty strings):
    incremental models compare it with the stored one to re-normalize only new or changed rows. -#}
{% macro row_hash(columns) -%}
    ('x' || left(md5(row({{ columns | join(', ') }})::text), 16))::bit(64)::bigint
{%- endmacro %}
