-- ops_matcher_health reads its backlog size from the as_of day of the daily metrics (so the
-- lead history is derived once for it): it must equal the backlog view's row count.
select health.backlog_size, backlog.leads
from {{ ref('ops_matcher_health') }} as health
cross join (select count(*) as leads from {{ ref('ops_kpi_red_backlog') }}) as backlog
where health.backlog_size <> backlog.leads
