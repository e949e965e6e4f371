-- One row per day: red-KPI backlog flow over every lead channel, counted from each lead's exact
-- entry and exit (stg_canon__red_lead_history), from the first lead's day to the as_of day.
-- ops_kpi_red_recovery_metrics_daily_by_source is the same per lead_source_table (a test checks the sums).
{{ red_backlog_flow(by_source=false) }}
