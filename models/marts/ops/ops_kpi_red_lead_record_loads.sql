-- One row per lead record with its load id. Every write to a record (new, changed, gone from
-- raw, a full rebuild) carries a newer load id, so the leads loaded after the kept red-KPI
-- state was derived are those with a higher one: the matcher derives their state again
-- (matcher/backlog.py). Filtered on load_id, this view reads the records' load_id index.

select
    record_uid as lead_record_uid,
    load_id
from {{ ref('int_identity__records') }}
where record_kind = 'lead'
