-- ops_kpi_red_lead_history for the leads in canon.red_lead_scope only, read by index lookups.
--
-- The matcher keeps every lead's red-KPI state (canon.red_lead_history). After a run that
-- changed a few thousand leads out of a million, deriving the live view over every lead costs
-- seconds for nothing; instead the matcher puts the leads a change can reach into
-- red_lead_scope (matcher/backlog.py) and reads this view. It is the same two macros as the
-- live views (identity_gap_analysis, red_lead_states), over inputs cut to what those leads'
-- rows read: their records, links and attempts, and every link and the origin of their
-- persons. The macros read nothing else for a lead, so each row equals the live view's row
-- for that lead (a matcher test compares the two after every kind of change).

with scope as (
    select lead_record_uid from {{ source('canon', 'red_lead_scope') }}
),

scoped_records as (
    select * from {{ ref('int_identity__records') }}
    where record_uid in (select lead_record_uid from scope)
),

scoped_persons as (
    select distinct person_key from {{ ref('stg_canon__identity_links') }}
    where record_uid in (select lead_record_uid from scope)
),

-- every link of those persons: the leads' own links, the origin's link, the earliest lead,
-- and the driver links whose claims cover a lead
scoped_links as (
    select * from {{ ref('stg_canon__identity_links') }}
    where person_key in (select person_key from scoped_persons)
),

scoped_origins as (
    select * from {{ ref('stg_canon__identity_origin') }}
    where person_key in (select person_key from scoped_persons)
),

scoped_attempts as (
    select * from {{ ref('stg_canon__match_attempts') }}
    where record_uid in (select lead_record_uid from scope)
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
        claims=ref('stg_raw__claims'),
        links='scoped_links',
    ) }}
)

select * from final
