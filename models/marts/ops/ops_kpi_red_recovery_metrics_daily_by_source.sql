-- One row per day and lead channel: red-KPI backlog flow, counted from each lead's exact
-- entry and exit (stg_canon__red_lead_history), from the first lead's day to the as_of day.
{{ red_backlog_flow(by_source=true) }}
