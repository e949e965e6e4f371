-- Which run wrote a row (links, registry, origins, attempts, the kept red-KPI state) is checked
-- once per statement instead of once per row. A foreign key to match_runs runs a lookup with a
-- row lock on the run for every row written: at 1M leads a first run writes 4.7M such rows, and
-- the checks took more time than the writes (1M links: 9.2 s without foreign keys, 14.6 s with
-- the person's, 21.2 s with the person's and the run's). The matcher writes only its own run id,
-- recorded before any of its writes. What the foreign keys also guaranteed, that a run named by
-- a row is never removed, is now a rule of match_runs itself: it is the audit trail of every run,
-- and its rows are never deleted (below). The dbt source tests check every run reference
-- (relationships to match_runs.run_id). The person foreign keys (links and origins to the
-- registry) stay: they are what the identity model is.
do $$
declare
    c record;
begin
    for c in
        select con.conname, rel.relname
        from pg_constraint con
        join pg_class rel on rel.oid = con.conrelid
        join pg_namespace n on n.oid = rel.relnamespace
        where con.contype = 'f'
            and n.nspname = current_schema()
            and con.confrelid = 'match_runs'::regclass
            and rel.relname in ('identity_registry', 'identity_links', 'identity_origin', 'match_attempts',
                                'red_lead_history')
    loop
        execute format('alter table %I drop constraint %I', c.relname, c.conname);
    end loop;
end $$;

create function forbid_run_removal() returns trigger language plpgsql as $$
begin
    raise exception 'match_runs is the audit trail of every run: runs are never deleted'
        using errcode = 'restrict_violation';
end $$;
create trigger match_runs_never_deleted before delete on match_runs
    for each row execute function forbid_run_removal();
create trigger match_runs_never_truncated before truncate on match_runs
    for each statement execute function forbid_run_removal();
