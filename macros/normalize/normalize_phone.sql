{#- National mobile number of the configured country (vars phone_country_code,
    phone_national_length, phone_mobile_prefix), or null when the value is not a plausible
    mobile; phone_invalid_reason says why. A valid number is the last national_length digits
    of a digit string matching the settings' valid_pattern; placeholders are removed with
    nullif. -#}
{% macro normalize_phone(col) -%}
    {{ return(adapter.dispatch('normalize_phone')(col)) }}
{%- endmacro %}

{% macro default__normalize_phone(col) -%}
    {%- set phone = phone_settings() -%}
    {%- set ns = namespace(expr="case when " ~ phone_digits(col) ~ " ~ '" ~ phone.valid_pattern ~ "'"
        ~ " then right(" ~ phone_digits(col) ~ ", " ~ phone.national_length ~ ") end") -%}
    {%- for placeholder in phone.placeholders -%}
        {%- set ns.expr = "nullif(" ~ ns.expr ~ ", '" ~ placeholder ~ "')" -%}
    {%- endfor -%}
    {{ ns.expr }}
{%- endmacro %}
