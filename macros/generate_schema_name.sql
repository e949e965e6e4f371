{#- A folder's +schema is the schema's full name (staging, intermediate, identity, ops),
    not a suffix of the target schema: the matcher and the ops team look for fixed names. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
