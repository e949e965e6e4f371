{#- Vehicle plate: upper-case letters and digits, separators dropped ('abc-123' ->
    'ABC123'). Null when there is no digit (SIN PLACA, EN TRAMITE ...), fewer than 5
    characters are left, or it is one character repeated or a run of 0123456789. -#}
{% macro normalize_plate(col) -%}
    {{ return(adapter.dispatch('normalize_plate')(col)) }}
{%- endmacro %}

{% macro default__normalize_plate(col) -%}
    {%- set cleaned = "regexp_replace(upper(" ~ col ~ "), '[^A-Z0-9]+', '', 'g')" -%}
    case
        when ({{ col }}) !~ '[0-9]' then null
        when length({{ cleaned }}) < 5 then null
        when ltrim({{ cleaned }}, left({{ cleaned }}, 1)) = '' then null
        when strpos('01234567890', {{ cleaned }}) > 0 then null
        else {{ cleaned }}
    end
{%- endmacro %}
