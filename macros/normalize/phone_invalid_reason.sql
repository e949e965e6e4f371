{#- Why normalize_phone(col) is null: null when the phone is valid or absent (null/blank),
    else placeholder, no_digits, too_short, too_long or not_mobile (a landline, a number of
    another country, or a national number without the mobile prefix). -#}
{% macro phone_invalid_reason(col) -%}
    {{ return(adapter.dispatch('phone_invalid_reason')(col)) }}
{%- endmacro %}

{% macro default__phone_invalid_reason(col) -%}
    {%- set phone = phone_settings() -%}
    {%- set national = "regexp_replace(" ~ phone_digits(col) ~ ", '" ~ phone.prefix_pattern ~ "', '')" -%}
    case
        when btrim({{ col }}, E' \t\r\n') = '' or ({{ col }}) is null then null
        when {{ normalize_phone(col) }} is not null then null
        when ({{ col }}) !~ '[0-9]' then 'no_digits'
        when {{ national }} ~ '^([0-9])\1+$'
            or (length({{ national }}) >= 6 and strpos('01234567890', {{ national }}) > 0)
            then 'placeholder'
        when {{ national }} like '00%' then 'not_mobile'
        when length({{ national }}) < {{ phone.national_length }} then 'too_short'
        when length({{ national }}) > {{ phone.national_length }} then 'too_long'
        else 'not_mobile'
    end
{%- endmacro %}
