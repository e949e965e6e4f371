-- One row per lead: is the lead tied to a person whose origin agrees with the evidence?
-- (The definition is the macro identity_gap_analysis, shared with the scoped derivation the
-- matcher runs for the leads a change can reach: ops_kpi_red_lead_history_scoped.)

{{ identity_gap_analysis(
    records=ref('int_identity__records'),
    links=ref('stg_canon__identity_links'),
    origins=ref('stg_canon__identity_origin'),
    attempts=ref('stg_canon__match_attempts'),
) }}
