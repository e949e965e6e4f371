{#- Claim attributions in int_identity__records, per channel `c` (a dict with table, pk, kind):
    a lead in one of `claim_lead_tables` is joined to the attributions by its primary key; its `claim_driver_id` is the driver claims name it for, a driver's is its own id.
    The raw hash a lead is compared on includes the attribution when it has one, so a claim
    naming an already loaded lead makes it a changed record; a lead no claim names keeps the
    hash of its raw row alone. -#}

{#- Per lead id that claims name, the one driver counted claims name it for (claims whose status
    is in `claim_attribution_excluded_statuses` do not count; a lead id claimed for two drivers
    is left out), as (lead_id, driver_id, first_claimed_at, claims); only for `lead_ids` when
    given (a list of ids, written into the query). -#}
{%- macro claim_attributions_select(lead_ids=none) -%}
{%- set excluded = var('claim_attribution_excluded_statuses', []) -%}
select
    lead_id,
    min(driver_id) as driver_id,
    min(claimed_at) as first_claimed_at,
    count(*) as claims
from {{ ref('stg_raw__claims') }}
where lead_id is not null
    and driver_id is not null
    {%- if excluded %}
    and coalesce(status, '') <> all (array[{% for s in excluded %}'{{ s | lower | replace("'", "''") }}'{% if not loop.last %}, {% endif %}{% endfor %}]::text[])
    {%- endif %}
    {%- if lead_ids is not none %}
    and lead_id = any (array[{% for k in lead_ids %}'{{ k | replace("'", "''") }}'{% if not loop.last %}, {% endif %}{% endfor %}]::text[])
    {%- endif %}
group by lead_id
having min(driver_id) = max(driver_id)
{%- endmacro %}

{#- the left join of a lead channel's staged rows (alias `staged`) to the attributions (the CTE
    `claim_attributions` of the query) -#}
{%- macro claim_attribution_join(c) -%}
    {%- if c.kind == 'lead' and c.table in var('claim_lead_tables', []) %}
    left join claim_attributions as attribution
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
