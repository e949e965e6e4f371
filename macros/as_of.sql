{#-
    The moment every operational view calls "now": `current_timestamp` (so views stay live),
    or the fixed timestamptz of var `as_of` when it is set (unit tests, replaying a past day:
    `dbt build --vars '{as_of: "2026-01-12 12:00:00+00"}'`). Dates derived from it ("today")
    follow the session time zone, like every other `::date` in the ops models.
-#}
{% macro as_of() -%}
    {%- set value = var('as_of', none) -%}
    {%- if value is none or (value is string and value | trim == '') -%}
        current_timestamp
    {%- else -%}
        cast('{{ value | string | replace("'", "''") }}' as timestamptz)
    {%- endif -%}
{%- endmacro %}
