-- One row per claim: what of it the red-KPI state reads (the lead and the driver it names, its
-- date), with the record_uid of that lead and of that driver. The matcher keeps a copy beside
-- the red-KPI state (canon.red_lead_claims); a claim added, removed or edited since then
-- reaches the state of its lead and of every lead of its driver's person, and only those are
-- derived again (matcher/backlog.py).

select
    lead_id,
    driver_id,
    claimed_at,
    {{ record_uid("'cabinet_leads'::text", 'lead_id') }} as lead_record_uid,
    {{ record_uid("'drivers'::text", 'driver_id') }} as driver_record_uid
from {{ ref('stg_raw__claims') }}
