{#- Claim attributions in int_identity__records, per channel `c` (a dict with table, pk, kind):
    a lead in one of `claim_lead_tables` is joined to int_identity__claim_attributions by its
    primary key; its `claim_driver_id` is the driver claims name it for, a driver's is its own id.
    The raw hash a lead is compared on includes the attribution when it has one, so a claim
    naming an already loaded lead makes it a changed record; a lead no claim names keeps the
    hash of its raw row alone. -#}

{#- the left join of a lead channel's staged rows (alias `staged`) to the attributions -#}
{%- macro claim_attribution_join(c) -%}
    {%- if c.kind == 'lead' and c.table in var('claim_lead_tables', []) %}
    left join {{ ref('int_identity__claim_attributions') }} as attribution
        on attribution.lead_id = staged.{{ c.pk }}
    {%- endif -%}
{%- endmacro -%}

{#- the record's claim_driver_id -#}
{%- macro claim_driver_column(c) -%}
    {%- if c.kind == 'driver' -%} staged.{{ c.pk }}
    {%- elif c.table in var('claim_lead_tables', []) -%} attribution.driver_id
    {%- else -%} null::text
    {%- endif -%}
{%- endmacro -%}

{#- the raw hash the record is compared on -#}
{%- macro claim_attributed_hash(c) -%}
    {%- if c.kind == 'lead' and c.table in var('claim_lead_tables', []) -%}
    case when attribution.driver_id is null then staged.raw_hash
        else hash_record_extended(row(staged.raw_hash, attribution.driver_id), 0) end
    {%- else -%} staged.raw_hash
    {%- endif -%}
{%- endmacro %}
