{{ config(materialized='table') }}
-- Which driver the platform's claims name each lead for: one row per lead id that claims name
-- (claims.lead_id), with the one driver they name it for. The platform pays the park for that
-- driver on the strength of that lead, so it is evidence that the lead is that driver: the
-- lead's record carries the driver's id (`claim_driver_id`), a blocking key pairs it with the
-- driver's record, and the matcher's `claim` field scores the agreement (matcher/defaults.toml).
--
-- Claims whose status is in `claim_attribution_excluded_statuses` (default: rejected) do not
-- count. A lead that counted claims name for two different drivers is left out: the platform
-- contradicts itself, and neither driver is taken.
--
-- A table, built again by every run before int_identity__records, which joins it to the lead
-- tables named in `claim_lead_tables` and counts a lead whose attribution appears, changes or
-- goes as a changed record. (Joined as a view, or as a CTE of that model, it was aggregated
-- again in every query, and a CTE keeps Postgres from running the query on more than one
-- core: at 1M leads, 1M claims, a no-change run of that model took 8.9 s instead of 2.2 s.)

{%- set excluded = var('claim_attribution_excluded_statuses', []) %}

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
group by lead_id
having min(driver_id) = max(driver_id)
