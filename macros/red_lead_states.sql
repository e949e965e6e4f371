{#- The red-KPI state of every lead of `gap_analysis` (rows of ops_identity_gap_analysis): claim
    coverage, in the backlog or not, when it entered and left. One definition behind the live
    view (ops_kpi_red_lead_history) and the scoped one (ops_kpi_red_lead_history_scoped).
    `claims` has the columns of stg_raw__claims, `links` those of stg_canon__identity_links; a
    lead's row reads only the claims on it and the driver links (and their claims) of its person. -#}
{% macro red_lead_states(gap_analysis, claims, links) -%}
{#- Claim coverage is gathered by the lead's record key without reading `gap_analysis`: a claim
    on a lead by record_uid('cabinet_leads', lead_id) (macros/record_uid.sql), a driver's claim
    through the lead's own link. `gap_analysis` is then read once, so Postgres streams it
    instead of writing every lead's row to a temporary file and reading it three times. A
    claim's moment depends on the lead's date only when the claim has none, so it is split: the
    earliest dated moment, whether an undated claim is on the lead itself (it covers from the
    lead's date), and the earliest moment both links of an undated driver claim exist (it covers
    from the later of that and the lead's date). min over claims of greatest(lead_at, x) is
    greatest(lead_at, min x), and links always have linked_at. -#}
with gap_analysis as (
    select * from {{ gap_analysis }}
),

driver_links as (
    select
        source_pk as driver_id,
        person_key,
        linked_at
    from {{ links }}
    where source_table = 'drivers'
),

lead_links as (
    select
        record_uid as lead_record_uid,
        person_key,
        linked_at
    from {{ links }}
    where source_table <> 'drivers'
),

-- A claim on the lead; one without a date covers the lead from its start (the lead never
-- counts as backlog).
lead_claims as (
    select
        {{ record_uid("'cabinet_leads'::text", 'claims.lead_id') }} as lead_record_uid,
        claims.claimed_at as dated_covered_at,
        claims.claimed_at is null as is_undated_on_lead,
        null::timestamptz as undated_linked_at
    from {{ claims }} as claims
    where claims.lead_id is not null
),

-- A claim of a driver of the same person covers the lead once both links exist.
driver_claims as (
    select
        lead_links.lead_record_uid,
        case when claims.claimed_at is not null
            then greatest(claims.claimed_at, lead_links.linked_at, driver_links.linked_at) end as dated_covered_at,
        false as is_undated_on_lead,
        case when claims.claimed_at is null
            then greatest(lead_links.linked_at, driver_links.linked_at) end as undated_linked_at
    from lead_links
    inner join driver_links
        on driver_links.person_key = lead_links.person_key
    inner join {{ claims }} as claims
        on claims.driver_id = driver_links.driver_id
),

claim_coverage as (
    select
        lead_record_uid,
        min(dated_covered_at) as dated_covered_at,
        bool_or(is_undated_on_lead) as is_undated_on_lead,
        min(undated_linked_at) as undated_linked_at
    from (
        select * from lead_claims
        union all
        select * from driver_claims
    ) as covering_claims
    group by lead_record_uid
),

covered_leads as (
    select
        gap_analysis.*,
        claim_coverage.lead_record_uid is not null as has_claim,
        least(
            claim_coverage.dated_covered_at,
            case when claim_coverage.is_undated_on_lead then gap_analysis.lead_at end,
            case when claim_coverage.undated_linked_at is not null
                then greatest(gap_analysis.lead_at, claim_coverage.undated_linked_at) end
        ) as claim_covered_at
    from gap_analysis
    left join claim_coverage
        on claim_coverage.lead_record_uid = gap_analysis.lead_record_uid
),

lead_states as (
    select
        lead_record_uid,
        lead_source_table,
        lead_source_pk,
        lead_at,
        gap_reason,
        last_fail_reason,
        last_attempt_at,
        resolved_at,
        claim_covered_at,
        gap_reason <> 'resolved' and not has_claim as is_in_backlog,
        case
            when resolved_at is not null
                and resolved_at <= coalesce(claim_covered_at, 'infinity'::timestamptz)
                then 'matched'
            when has_claim then 'claimed'
        end as exit_kind,
        least(resolved_at, claim_covered_at) as left_at
    from covered_leads
),

final as (
    {{ red_lead_moments('lead_states') }}
)

select * from final
{%- endmacro %}
