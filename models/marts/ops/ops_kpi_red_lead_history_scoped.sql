-- ops_kpi_red_lead_history for the leads in canon.red_lead_scope only, read by index lookups.
--
-- The matcher keeps every lead's red-KPI state (canon.red_lead_history). After a run that
-- changed a few thousand leads out of a million, deriving the live view over every lead costs
-- seconds for nothing; instead the matcher puts the leads a change can reach into
-- red_lead_scope (matcher/backlog.py) and reads this view. It is the same two macros as the
-- live views (identity_gap_analysis, red_lead_states), over inputs cut to what those leads'
-- rows read: their records, links and attempts, every link and the origin of their persons,
-- and the claims on those leads and on those persons' drivers. The macros read nothing else
-- for a lead, so each row equals the live view's row for that lead (a matcher test compares
-- the two after every kind of change).
--
-- Claims are read from the matcher's copy, canon.red_lead_claims (hash-indexed by lead and
-- driver), which the same transaction has just brought up to date with ops_kpi_red_lead_claims
-- (the raw claims table has no index to look claims up by). Every cut is a join driven by
-- the scope (not `in (subquery)`), so the planner looks each row up by index.

with scoped_records as (
    select records.*
    from {{ source('canon', 'red_lead_scope') }} as scope
    inner join {{ ref('int_identity__records') }} as records
        on records.record_uid = scope.lead_record_uid
),

scoped_persons as (
    select distinct links.person_key
    from {{ source('canon', 'red_lead_scope') }} as scope
    inner join {{ ref('stg_canon__identity_links') }} as links
        on links.record_uid = scope.lead_record_uid
),

-- every link of those persons: the leads' own links, the origin's link, the earliest lead,
-- and the driver links whose claims cover a lead
scoped_links as (
    select links.*
    from scoped_persons
    inner join {{ ref('stg_canon__identity_links') }} as links
        on links.person_key = scoped_persons.person_key
),

scoped_origins as (
    select origins.*
    from scoped_persons
    inner join {{ ref('stg_canon__identity_origin') }} as origins
        on origins.person_key = scoped_persons.person_key
),

scoped_attempts as (
    select attempts.*
    from {{ source('canon', 'red_lead_scope') }} as scope
    inner join {{ ref('stg_canon__match_attempts') }} as attempts
        on attempts.record_uid = scope.lead_record_uid
),

-- the claims on those cabinet leads and on those persons' drivers (a claim naming both may
-- come twice: the macro only takes the earliest moment a claim covers a lead)
scoped_claims as (
    select claims.lead_id, claims.driver_id, claims.claimed_at
    from (select distinct source_pk from scoped_records where source_table = 'cabinet_leads') as leads
    inner join {{ source('canon', 'red_lead_claims') }} as claims
        on claims.lead_id = leads.source_pk
    union all
    select claims.lead_id, claims.driver_id, claims.claimed_at
    from (select distinct source_pk from scoped_links where source_table = 'drivers') as drivers
    inner join {{ source('canon', 'red_lead_claims') }} as claims
        on claims.driver_id = drivers.source_pk
),

scoped_gap_analysis as (
    {{ identity_gap_analysis(
        records='scoped_records',
        links='scoped_links',
        origins='scoped_origins',
        attempts='scoped_attempts',
    ) }}
),

final as (
    {{ red_lead_states(
        gap_analysis='scoped_gap_analysis',
        claims='scoped_claims',
        links='scoped_links',
    ) }}
)

select * from final
