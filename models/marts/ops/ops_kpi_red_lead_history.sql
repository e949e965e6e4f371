-- One row per lead: whether it is in the red-KPI backlog (no identity nor claims) now, and
-- when it entered and left it. The daily recovery metrics are counted from these two moments,
-- so history is exact and ends, on the as_of day, at the current backlog.
--
-- This view is the definition, derived live from the links, origins, attempts and claims. The
-- KPI views read the same rows from stg_canon__red_lead_history: the matcher keeps them in
-- canon.red_lead_history at the end of every run (only the rows that changed), in the same
-- transaction as the recovery queue, so the views do not derive every lead's history per read.
--
-- (The definition is the macro red_lead_states, shared with the scoped derivation the matcher
-- runs for the leads a change can reach: ops_kpi_red_lead_history_scoped.)

{{ red_lead_states(
    gap_analysis=ref('ops_identity_gap_analysis'),
    claims=ref('stg_raw__claims'),
    links=ref('stg_canon__identity_links'),
) }}
