-- Which leads' red-KPI state a change can reach, so a refresh derives only those
-- (matcher/backlog.py) instead of every lead.
--
-- Every statement that changes links, origins or attempts, whoever runs it, logs the record
-- and the person of each row it changed (old and new) in red_lead_changes, in its own
-- transaction. A row with neither (from a truncate, or written by a run that is about to
-- change most leads) means "derive every lead": once it is there, the triggers log nothing
-- more. The refresh that keeps the state deletes the rows it has read, in the same
-- transaction as the state.
create table red_lead_changes (
    change_id   bigint generated always as identity primary key,
    record_uid  bigint,
    person_key  uuid
);
create index red_lead_changes_everything on red_lead_changes (change_id)
    where record_uid is null and person_key is null;

create function note_red_lead_changes() returns trigger language plpgsql
set search_path from current as $$
begin
    if exists (select 1 from red_lead_changes where record_uid is null and person_key is null) then
        return null;
    end if;
    if tg_op = 'TRUNCATE' then
        insert into red_lead_changes (record_uid, person_key) values (null, null);
    elsif tg_table_name = 'identity_links' then
        -- a changed link reaches its record and every lead of its person (before and after)
        if tg_op in ('INSERT', 'UPDATE') then
            insert into red_lead_changes (record_uid, person_key) select record_uid, person_key from new_rows;
        end if;
        if tg_op in ('DELETE', 'UPDATE') then
            insert into red_lead_changes (record_uid, person_key) select record_uid, person_key from old_rows;
        end if;
    elsif tg_table_name = 'identity_origin' then
        if tg_op in ('INSERT', 'UPDATE') then
            insert into red_lead_changes (person_key) select person_key from new_rows;
        end if;
        if tg_op in ('DELETE', 'UPDATE') then
            insert into red_lead_changes (person_key) select person_key from old_rows;
        end if;
    elsif tg_table_name = 'match_attempts' then
        if tg_op in ('INSERT', 'UPDATE') then
            insert into red_lead_changes (record_uid) select record_uid from new_rows;
        end if;
        if tg_op in ('DELETE', 'UPDATE') then
            insert into red_lead_changes (record_uid) select record_uid from old_rows;
        end if;
    end if;
    return null;
end $$;

do $$
declare
    t text;
begin
    foreach t in array array['identity_links', 'identity_origin', 'match_attempts'] loop
        execute format('create trigger %I after insert on %I referencing new table as new_rows'
                       ' for each statement execute function note_red_lead_changes()', t || '_changes_insert', t);
        execute format('create trigger %I after update on %I referencing old table as old_rows new table as new_rows'
                       ' for each statement execute function note_red_lead_changes()', t || '_changes_update', t);
        execute format('create trigger %I after delete on %I referencing old table as old_rows'
                       ' for each statement execute function note_red_lead_changes()', t || '_changes_delete', t);
        execute format('create trigger %I after truncate on %I'
                       ' for each statement execute function note_red_lead_changes()', t || '_changes_truncate', t);
    end loop;
end $$;

-- Until a refresh has kept the state with the new columns below, derive every lead.
insert into red_lead_changes (record_uid, person_key) values (null, null);

-- The leads a scoped refresh derives again (read by the dbt view ops_kpi_red_lead_history_scoped);
-- filled and emptied inside the refresh's transaction, so it is empty to everyone else.
create table red_lead_scope (
    lead_record_uid bigint primary key
);

-- The claims as the kept state read them (the distinct rows of the dbt view
-- ops_kpi_red_lead_claims: the state depends on which claims exist, not on how many copies),
-- to tell which were added, removed or edited since. A refresh brings it up to date (by
-- claim_key, a hash of the row) and a scoped one then reads claims from it by lead and by
-- driver (hash indexes: keys of any length).
create table red_lead_claims (
    claim_key           bigint      not null,
    lead_id             text,
    driver_id           text,
    claimed_at          timestamptz,
    lead_record_uid     bigint,
    driver_record_uid   bigint
);
create index red_lead_claims_key on red_lead_claims (claim_key);
create index red_lead_claims_lead on red_lead_claims using hash (lead_id);
create index red_lead_claims_driver on red_lead_claims using hash (driver_id);
-- like the kept state, its changes are counted (0006): a copy written by anyone but the
-- refresh is reconciled with the claims by the next refresh
create trigger red_lead_claims_version_insert after insert on red_lead_claims referencing new table as changed_rows
    for each statement execute function bump_table_version();
create trigger red_lead_claims_version_update after update on red_lead_claims referencing new table as changed_rows
    for each statement execute function bump_table_version();
create trigger red_lead_claims_version_delete after delete on red_lead_claims referencing old table as changed_rows
    for each statement execute function bump_table_version();
create trigger red_lead_claims_version_truncate after truncate on red_lead_claims
    for each statement execute function bump_table_version();

-- Beside the fingerprint: what a scoped refresh needs to know about the kept state.
alter table red_lead_history_inputs
    add column definitions      text,   -- hash of the views' definitions it was derived with
    add column records_load_id  bigint, -- the records' newest load id then
    add column claims_hash      text,   -- the claims' fingerprint then (red_lead_claims holds them)
    add column kept_versions    text,   -- the kept tables' change counters after its writes
    add column derived_leads    bigint; -- leads derived by that refresh (null: every lead)
