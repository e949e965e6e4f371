{#- The red-KPI state of every lead of `gap_analysis` (rows of ops_identity_gap_analysis): claim
    coverage, in the backlog or not, when it entered and left. One definition behind the live
    view (ops_kpi_red_lead_history) and the scoped one (ops_kpi_red_lead_history_scoped).
    `claims` has the columns of stg_raw__claims, `links` those of stg_canon__identity_links; a
    lead's row reads only the claims on it and the driver links (and their claims) of its person. -#}
{% macro red_lead_states(gap_analysis, claims, links) -%}
with gap_analysis as (
    select * from {{ gap_analysis }}
),

claims as (
    select * from {{ claims }}
),

driver_links as (
    select
        source_pk as driver_id,
        person_key,
        linked_at
    from {{ links }}
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
{%- endmacro %}
