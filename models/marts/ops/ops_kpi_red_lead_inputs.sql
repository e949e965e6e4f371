-- One row: a fingerprint of the data outside the matcher's own tables that the red-KPI lead
-- state (ops_kpi_red_lead_history) is derived from. The matcher reads it, with the change
-- counters of its canon tables (canon.table_versions), before deriving that state: when
-- nothing moved since the state it keeps was derived, the derivation over every lead is
-- skipped (matcher/backlog.py). The matcher checks that this view reads every table the live
-- view reads and that its canon tables count their changes; when one is not covered, it
-- derives on every run.

with records as (
    -- every write to the records (a new, changed or deleted raw row, a full rebuild) carries
    -- a newer load id: the transaction id of the dbt run that wrote it
    select max(load_id) as records_load_id
    from {{ ref('int_identity__records') }}
),

claims as (
    -- a claim added, removed or edited changes the count or the order-free sum of row hashes.
    -- Only the columns the derivation reads (through stg_raw__claims) are hashed, each in its
    -- binary form (hash_record_extended, as macros/row_hash.sql): hashing the row's text
    -- depended on the session's TimeZone (claimed_at prints in it), and took 0.75 s against
    -- 0.21 s for 1M claims. The keys as text, as staging reads them (every type has that cast;
    -- not every type has a binary hash); the date in its own type (as text it would print in
    -- the session's zone).
    select
        count(*) as claims_rows,
        coalesce(sum(hash_record_extended(row(cast(claims_source.lead_id as text),
            cast(claims_source.driver_id as text), claims_source.claimed_at), 0)), 0) as claims_hash
    from {{ source('raw', 'claims') }} as claims_source
),

final as (
    select
        records.records_load_id,
        claims.claims_rows,
        claims.claims_hash
    from records
    cross join claims
)

select * from final
