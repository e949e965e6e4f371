{#- Every lead of `records` with its gap reason: is the lead tied to a person whose origin agrees
    with the evidence? One definition behind the live view (ops_identity_gap_analysis, over
    every lead) and the scoped one (ops_kpi_red_lead_history_scoped, over the leads a change can
    reach). `records`, `links`, `origins` and `attempts` are relations (or CTE names) with the
    columns of int_identity__records and the canon staging views. For a lead of `records` the
    result reads only its own link and attempts and the links and origin of its person, so a
    scope that passes those rows in full gets exactly the live view's rows for its leads. -#}
{% macro identity_gap_analysis(records, links, origins, attempts) -%}
with leads as (
    select
        record_uid,
        source_table,
        source_pk,
        event_at
    from {{ records }}
    where record_kind = 'lead' and not is_deleted
),

links as (
    select * from {{ links }}
),

origins as (
    select * from {{ origins }}
),

attempts as (
    select * from {{ attempts }}
),

-- Attempts and links are joined to their lead by record_uid, the 64-bit key derived from
-- (source_table, source_pk) that the matcher writes with every row (macros/record_uid.sql): at
-- 1M leads and 1.5M attempts, sorting and hashing one bigint instead of two text columns took
-- the live derivation of every lead's red-KPI state from 9.3 s to 8.5 s (docs/benchmark.md, round 9).
latest_attempts as (
    select distinct on (record_uid)
        record_uid,
        outcome,
        fail_reason,
        attempted_at
    from attempts
    order by record_uid, attempted_at desc, attempt_id desc
),

earliest_linked_leads as (
    select
        person_key,
        min(source_event_at) as earliest_lead_event_at
    from links
    where source_table <> 'drivers'
    group by person_key
),

-- An origin contradicts the links when its record is not linked to the person, or when the
-- person has a linked lead dated before it (a driver origin of a person with a lead counts as later:
-- the rule only falls back to a driver when the person has no lead).
origin_checks as (
    select
        origins.person_key,
        origins.origin_tag,
        origins.origin_source_table,
        origins.origin_source_pk,
        origins.decided_at,
        origin_links.source_pk is null as is_origin_unlinked,
        coalesce(
            earliest_linked_leads.earliest_lead_event_at is not null
            and (
                origin_links.source_table = 'drivers'
                or coalesce(origin_links.source_event_at, 'infinity'::timestamptz)
                > earliest_linked_leads.earliest_lead_event_at
            ),
            false
        ) as is_origin_later_than_earliest_lead
    from origins
    left join links as origin_links
        on origin_links.source_table = origins.origin_source_table
        and origin_links.source_pk = origins.origin_source_pk
        and origin_links.person_key = origins.person_key
    left join earliest_linked_leads
        on earliest_linked_leads.person_key = origins.person_key
),

classified as (
    select
        leads.record_uid as lead_record_uid,
        leads.source_table as lead_source_table,
        leads.source_pk as lead_source_pk,
        -- staging already nulls non-finite timestamps; kept here too, the ops views must never break
        case when isfinite(leads.event_at) then leads.event_at end as lead_at,
        links.person_key,
        links.linked_at,
        origin_checks.origin_tag,
        origin_checks.origin_source_table,
        origin_checks.origin_source_pk,
        origin_checks.decided_at as origin_decided_at,
        latest_attempts.attempted_at as last_attempt_at,
        case when latest_attempts.outcome = 'failed' then latest_attempts.fail_reason end as last_fail_reason,
        case
            when links.person_key is null then 'no_identity'
            when origin_checks.person_key is null then 'no_origin'
            when origin_checks.is_origin_unlinked
                or origin_checks.is_origin_later_than_earliest_lead then 'inconsistent_origin'
            else 'resolved'
        end as gap_reason
    from leads
    left join links
        on links.record_uid = leads.record_uid
    left join origin_checks
        on origin_checks.person_key = links.person_key
    left join latest_attempts
        on latest_attempts.record_uid = leads.record_uid
),

final as (
    select
        lead_record_uid,
        lead_source_table,
        lead_source_pk,
        lead_at,
        person_key,
        linked_at,
        origin_tag,
        origin_source_table,
        origin_source_pk,
        origin_decided_at,
        last_attempt_at,
        last_fail_reason,
        gap_reason,
        case when gap_reason = 'resolved' then greatest(linked_at, origin_decided_at) end as resolved_at
    from classified
)

select * from final
{%- endmacro %}
