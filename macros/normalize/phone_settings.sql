{#- Phone rules of the configured country, built from the vars and checked, so a typo in
    dbt_project.yml fails at compile time instead of silently nulling every phone.
    Returns a dict used by normalize_phone and phone_invalid_reason. -#}
{% macro phone_settings() %}
    {%- set country_code = (var('phone_country_code', '51') or '') | string | trim -%}
    {%- set national_length = var('phone_national_length', 9) | int -%}
    {%- set mobile_prefix = (var('phone_mobile_prefix', '9') or '') | string | trim -%}

    {%- if not country_code.isdigit() or country_code | length > 3 -%}
        {{ exceptions.raise_compiler_error(
            "var phone_country_code must be 1 to 3 digits (e.g. '51'), got '" ~ country_code ~ "'") }}
    {%- endif -%}
    {%- if national_length < 6 or national_length > 15 -%}
        {{ exceptions.raise_compiler_error(
            "var phone_national_length must be an integer between 6 and 15, got '"
            ~ var('phone_national_length', 9) ~ "'") }}
    {%- endif -%}
    {%- if mobile_prefix != '' and (not mobile_prefix.isdigit() or mobile_prefix | length >= national_length) -%}
        {{ exceptions.raise_compiler_error(
            "var phone_mobile_prefix must be empty or a few digits (e.g. '9'), got '" ~ mobile_prefix ~ "'") }}
    {%- endif -%}

    {#- What may precede the national number: 00 + country code (a leading '+' has already
        become '00'), or the bare country code, then a trunk zero.
        prefix_pattern strips them (regexp_replace) and must not eat digits of a national
        number, hence the lookaheads. valid_pattern only matches a whole valid number, so it
        needs no lookahead and no capture group (a plain `~` match is several times faster
        than a capturing substring()); the national number is then the last
        national_length digits. -#}
    {%- if mobile_prefix == '' -%}
        {%- set trunk_lookahead = '[1-9]' -%}
        {%- set national_pattern = '[1-9][0-9]{' ~ (national_length - 1) ~ '}' -%}
    {%- else -%}
        {%- set trunk_lookahead = mobile_prefix -%}
        {%- set national_pattern = mobile_prefix ~ '[0-9]{' ~ (national_length - mobile_prefix | length) ~ '}' -%}
    {%- endif -%}
    {%- set prefix_pattern = '^(?:00' ~ country_code ~ '|' ~ country_code ~ '(?=0?[0-9]{' ~ national_length ~ '}$))?'
        ~ '(?:0(?=' ~ trunk_lookahead ~ '))?' -%}
    {%- set valid_pattern = '^(?:00' ~ country_code ~ '|' ~ country_code ~ ')?0?' ~ national_pattern ~ '$' -%}

    {#- National numbers of the right shape that are still placeholders: one digit repeated,
        or a run of 0123456789. Enumerated here so normalize_phone can drop them with nullif. -#}
    {%- set placeholders = [] -%}
    {%- for digit in '0123456789' -%}
        {%- set candidate = digit * national_length -%}
        {%- if candidate.startswith(mobile_prefix) and candidate not in placeholders -%}
            {%- do placeholders.append(candidate) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- for start in range(0, 12 - national_length) -%}
        {%- set candidate = '01234567890'[start:start + national_length] -%}
        {%- if candidate.startswith(mobile_prefix) and candidate not in placeholders -%}
            {%- do placeholders.append(candidate) -%}
        {%- endif -%}
    {%- endfor -%}

    {{ return({
        'country_code': country_code,
        'national_length': national_length,
        'mobile_prefix': mobile_prefix,
        'prefix_pattern': prefix_pattern,
        'valid_pattern': valid_pattern,
        'placeholders': placeholders,
    }) }}
{% endmacro %}
