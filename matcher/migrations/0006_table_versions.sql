-- A change counter per canon table that the red-KPI state is derived from, or is kept in.
-- Every statement that changes at least one row of such a table (insert, update, delete, or a
-- truncate), whoever runs it -- the matcher, an override, a repair, a hand-written fix -- adds
-- one to its table's version in the same transaction. The matcher keeps, beside the red-KPI
-- state, the versions it was derived from (matcher/backlog.py): when none moved, the state
-- cannot have changed and the derivation over every lead is skipped.
create table table_versions (
    table_name  text        primary key,
    version     bigint      not null,
    changed_at  timestamptz not null default clock_timestamp()
);

-- Statement-level, so a statement writing a million rows costs one counter update; the
-- transition table tells whether the statement changed any row at all (an upsert that found
-- nothing to do must not look like a change).
create function bump_table_version() returns trigger language plpgsql
set search_path from current as $$
begin
    if tg_op <> 'TRUNCATE' then
        if not exists (select 1 from changed_rows) then
            return null;
        end if;
    end if;
    insert into table_versions as v (table_name, version) values (tg_table_name, 1)
    on conflict (table_name) do update set version = v.version + 1, changed_at = clock_timestamp();
    return null;
end $$;

do $$
declare
    t text;
begin
    foreach t in array array['identity_links', 'identity_origin', 'match_attempts', 'red_lead_history', 'recovery_queue'] loop
        execute format('create trigger %I after insert on %I referencing new table as changed_rows'
                       ' for each statement execute function bump_table_version()', t || '_version_insert', t);
        execute format('create trigger %I after update on %I referencing new table as changed_rows'
                       ' for each statement execute function bump_table_version()', t || '_version_update', t);
        execute format('create trigger %I after delete on %I referencing old table as changed_rows'
                       ' for each statement execute function bump_table_version()', t || '_version_delete', t);
        execute format('create trigger %I after truncate on %I'
                       ' for each statement execute function bump_table_version()', t || '_version_truncate', t);
    end loop;
end $$;

-- The fingerprint of everything the kept red-KPI state was last derived from (one row).
create table red_lead_history_inputs (
    singleton       boolean     primary key default true check (singleton),
    fingerprint     text        not null,
    run_id          bigint      references match_runs (run_id),
    derived_at      timestamptz not null default clock_timestamp()
);
