{#- Identity document or driving-licence number: upper-case letters and digits only
    (separators dropped), so '12.345.678-k' and '12345678K' agree. Null when what is left
    cannot be a real number: no digit at all (SIN DATO, N/A, NULL, PENDIENTE ...), fewer
    than 6 characters, one character repeated (00000000) or a run of 0123456789.
    Plain string functions for the checks: a back-reference regex such as '^(.)\1+$' costs
    more than the cleaning itself. -#}
{% macro normalize_document(col) -%}
    {{ return(adapter.dispatch('normalize_document')(col)) }}
{%- endmacro %}

{% macro default__normalize_document(col) -%}
    {%- set cleaned = "regexp_replace(upper(" ~ col ~ "), '[^A-Z0-9]+', '', 'g')" -%}
    case
        when ({{ col }}) !~ '[0-9]' then null
        when length({{ cleaned }}) < 6 then null
        when ltrim({{ cleaned }}, left({{ cleaned }}, 1)) = '' then null
        when strpos('01234567890', {{ cleaned }}) > 0 then null
        else {{ cleaned }}
    end
{%- endmacro %}
