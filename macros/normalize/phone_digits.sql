{#- The digits of a phone, with a '+' written as the international prefix '00' and a
    spreadsheet float tail ('987654321.0') dropped. No validation: see normalize_phone. -#}
{% macro phone_digits(col) -%}
    {{ return(adapter.dispatch('phone_digits')(col)) }}
{%- endmacro %}

{% macro default__phone_digits(col) -%}
    replace(regexp_replace({{ col }}, '\.0$|[^0-9+]', '', 'g'), '+', '00')
{%- endmacro %}
