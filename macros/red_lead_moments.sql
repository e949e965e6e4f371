{#- A lead's backlog moments from its as_of-independent state (`states`: a relation or CTE with
    lead_at, is_in_backlog, left_at and the other red-lead-history columns): entered_at and
    exited_at capped at as_of, and whether it was ever in the backlog. One definition behind the
    live derivation (ops_kpi_red_lead_history) and the matcher-kept state
    (stg_canon__red_lead_history), so replaying a past day with `--vars '{as_of: ...}'` caps both
    the same way. `extra_columns` of `states` are passed through after those. -#}
{% macro red_lead_moments(states, extra_columns=[]) -%}
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
    is_in_backlog,
    exit_kind,
    left_at,
    entered_at,
    exited_at,
    -- a lead that left no later than it entered was never in the backlog
    exited_at is null or exited_at > entered_at as has_backlog_history
    {%- for column in extra_columns %},
    {{ column }}
    {%- endfor %}
from (
    -- a lead dated in the future enters the backlog at as_of, and an exit stamped after as_of
    -- (a claim dated ahead) happens at as_of, as the backlog view sees it
    select
        *,
        least(lead_at, {{ as_of() }}) as entered_at,
        case
            when not is_in_backlog
                then coalesce(least(left_at, {{ as_of() }}), least(lead_at, {{ as_of() }}))
        end as exited_at
    from {{ states }}
) as moments
{%- endmacro %}
