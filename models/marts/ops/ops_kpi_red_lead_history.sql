-- One row per lead: whether it is in the red-KPI backlog (no identity nor claims) now, and
-- when it entered and left it. The daily recovery metrics are counted from these two moments,
-- so history is exact and ends, on the as_of day, at the current backlog.
--
-- This view is the definition, derived live from the links, origins, attempts and claims. The
-- KPI views read the same rows from stg_canon__red_lead_history: the matcher keeps them in
-- canon.red_lead_history at the end of every run (only the rows that changed), in the same
-- transaction as the recovery queue, so the views do not derive every lead's history per read.

with gap_analysis as (
    select * from {{ ref('ops_identity_gap_analysis') }}
),

claims as (
    select * from {{ ref('stg_raw__claims') }}
),

driver_links as (
    select
        source_pk as driver_id,
        person_key,
        linked_at
    from {{ ref('stg_canon__identity_links') }}
    where source_table = 'drivers'
),

-- A claim without a date covers the lead from its start (the lead never counts as backlog).
lead_claims as (
    select
        gap_analysis.lead_record_uid,
        coalesce(claims.claimed_at, gap_analysis.lead_at) as covered_at
    from gap_analysis
    inner join claims
        on claims.lead_id = gap_analysis.lead_source_pk
    where gap_analysis.lead_source_table = 'cabinet_leads'
),

-- A claim of a driver of the same person covers the lead once both links exist.
driver_claims as (
    select
        gap_analysis.lead_record_uid,
        greatest(
            coalesce(claims.claimed_at, gap_analysis.lead_at),
            gap_analysis.linked_at,
            driver_links.linked_at
        ) as covered_at
    from gap_analysis
    inner join driver_links
        on driver_links.person_key = gap_analysis.person_key
    inner join claims
        on claims.driver_id = driver_links.driver_id
),

claim_coverage as (
    select
        lead_record_uid,
        min(covered_at) as claim_covered_at
    from (
        select * from lead_claims
        union all
        select * from driver_claims
    ) as covering_claims
    group by lead_record_uid
),

lead_states as (
    select
        gap_analysis.lead_record_uid,
        gap_analysis.lead_source_table,
        gap_analysis.lead_source_pk,
        gap_analysis.lead_at,
        gap_analysis.gap_reason,
        gap_analysis.last_fail_reason,
        gap_analysis.last_attempt_at,
        gap_analysis.resolved_at,
        claim_coverage.claim_covered_at,
        gap_analysis.gap_reason <> 'resolved' and claim_coverage.lead_record_uid is null as is_in_backlog,
        case
            when gap_analysis.resolved_at is not null
                and gap_analysis.resolved_at <= coalesce(claim_coverage.claim_covered_at, 'infinity'::timestamptz)
                then 'matched'
            when claim_coverage.lead_record_uid is not null then 'claimed'
        end as exit_kind,
        least(gap_analysis.resolved_at, claim_coverage.claim_covered_at) as left_at
    from gap_analysis
    left join claim_coverage
        on claim_coverage.lead_record_uid = gap_analysis.lead_record_uid
),

final as (
    {{ red_lead_moments('lead_states') }}
)

select * from final
