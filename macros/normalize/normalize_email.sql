{#- E-mail address: surrounding whitespace trimmed, lower-cased; null unless it has the
    shape local@domain.tld (one @, a non-empty local part of RFC 5322 atext and dots,
    dot-separated domain labels, a TLD of 2+ letters, no spaces). A plain `~` match (no
    capture group) keeps the regex on Postgres' fast path. -#}
{% macro normalize_email(col) -%}
    {{ return(adapter.dispatch('normalize_email')(col)) }}
{%- endmacro %}

{% macro default__normalize_email(col) -%}
    {%- set cleaned = "lower(btrim(" ~ col ~ ", E' \\t\\r\\n'))" -%}
    case
        when {{ cleaned }} ~ '^[a-z0-9!#$%&''*+/=?^_`{|}~.-]+@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$'
            then {{ cleaned }}
    end
{%- endmacro %}
