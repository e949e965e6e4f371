-- Matcher-owned tables. Runs with search_path set to the canon schema (see matcher/migrate.py).

create table match_runs (
    run_id            bigint generated always as identity primary key,
    command           text        not null default 'run',
    status            text        not null check (status in ('running', 'succeeded', 'failed', 'skipped')),
    started_at        timestamptz not null default clock_timestamp(),
    heartbeat_at      timestamptz not null default clock_timestamp(),
    finished_at       timestamptz,
    parameters        jsonb       not null default '{}'::jsonb,
    processed         integer     not null default 0,
    matched           integer     not null default 0,
    new_persons       integer     not null default 0,
    origins_written   integer     not null default 0,
    failed            integer     not null default 0,
    failed_by_reason  jsonb       not null default '{}'::jsonb,
    pending           integer     not null default 0,
    rows_written      bigint      not null default 0,
    error             text,
    pid               integer,
    host              text
);
create index match_runs_status_finished on match_runs (status, finished_at desc);

create table identity_registry (
    person_key      uuid        primary key,
    created_at      timestamptz not null default clock_timestamp(),
    created_by_run  bigint      references match_runs (run_id)
);

create table identity_links (
    source_table    text        not null
        check (source_table in ('cabinet_leads', 'scout_registrations', 'fleet_migrations', 'drivers')),
    source_pk       text        not null,
    record_uid      bigint      not null,
    person_key      uuid        not null references identity_registry (person_key),
    match_rule      text        not null,
    match_score     real        not null,
    confidence      text        not null check (confidence in ('high', 'medium', 'low')),
    evidence        jsonb       not null default '{}'::jsonb,
    source_event_at timestamptz,
    record_fingerprint text,
    run_id          bigint      references match_runs (run_id),
    linked_at       timestamptz not null default clock_timestamp(),
    updated_at      timestamptz not null default clock_timestamp(),
    primary key (source_table, source_pk),
    unique (record_uid)
);
create index identity_links_person on identity_links (person_key);
create index identity_links_linked_at on identity_links (linked_at);

create table identity_origin (
    person_key          uuid        primary key references identity_registry (person_key),
    origin_tag          text        not null
        check (origin_tag in ('cabinet_lead', 'scout_registration', 'fleet_migration', 'driver_direct')),
    origin_source_table text        not null,
    origin_source_pk    text        not null,
    origin_at           timestamptz,
    origin_rule         text        not null,
    run_id              bigint      references match_runs (run_id),
    decided_at          timestamptz not null default clock_timestamp()
);

-- Origins decide who gets paid: every change of an existing origin is recorded here.
create table identity_origin_history (
    history_id              bigint generated always as identity primary key,
    person_key              uuid        not null,
    old_origin_tag          text,
    old_origin_source_table text,
    old_origin_source_pk    text,
    old_origin_at           timestamptz,
    new_origin_tag          text        not null,
    new_origin_source_table text        not null,
    new_origin_source_pk    text        not null,
    new_origin_at           timestamptz,
    reason                  text        not null,
    run_id                  bigint      references match_runs (run_id),
    changed_by              text        not null default current_user,
    changed_at              timestamptz not null default clock_timestamp()
);
create index identity_origin_history_person on identity_origin_history (person_key);

-- Append-only: one row per record the matcher tried to resolve, per run.
create table match_attempts (
    attempt_id          bigint generated always as identity primary key,
    run_id              bigint      not null references match_runs (run_id),
    source_table        text        not null,
    source_pk           text        not null,
    record_fingerprint  text,
    outcome             text        not null check (outcome in ('matched', 'failed')),
    fail_reason         text
        check (fail_reason in ('missing_identifiers', 'no_candidates', 'below_threshold', 'conflict', 'shared_identifier')),
    best_score          real,
    match_rule          text,
    person_key          uuid,
    attempted_at        timestamptz not null default clock_timestamp(),
    check ((outcome = 'failed') = (fail_reason is not null))
);
create index match_attempts_record on match_attempts (source_table, source_pk, attempted_at desc);
create index match_attempts_time on match_attempts (attempted_at);

create function forbid_change() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only', tg_table_name;
end $$;
create trigger match_attempts_append_only before update or delete on match_attempts
    for each row execute function forbid_change();

-- Work list of the red-KPI backlog (leads without identity nor claims).
create table recovery_queue (
    source_table        text        not null,
    source_pk           text        not null,
    status              text        not null check (status in ('pending', 'matched', 'failed')),
    lead_at             timestamptz,
    attempts            integer     not null default 0,
    first_queued_at     timestamptz not null default clock_timestamp(),
    last_attempt_at     timestamptz,
    fail_reason         text,
    matched_person_key  uuid,
    matched_run_id      bigint,
    record_fingerprint  text,
    updated_at          timestamptz not null default clock_timestamp(),
    primary key (source_table, source_pk)
);
create index recovery_queue_status on recovery_queue (status);

-- Human decisions that survive re-runs. Pairs are stored in a canonical order (left < right).
create table match_overrides (
    override_id         bigint generated always as identity primary key,
    decision            text        not null check (decision in ('force_link', 'do_not_link')),
    left_source_table   text        not null,
    left_source_pk      text        not null,
    right_source_table  text        not null,
    right_source_pk     text        not null,
    reason              text        not null,
    created_by          text        not null default current_user,
    created_at          timestamptz not null default clock_timestamp(),
    check ((left_source_table, left_source_pk) < (right_source_table, right_source_pk)),
    unique (left_source_table, left_source_pk, right_source_table, right_source_pk)
);

-- Conflicts are refused, never merged: the persons involved are kept for review.
create table match_conflicts (
    run_id              bigint      not null references match_runs (run_id),
    source_table        text        not null,
    source_pk           text        not null,
    conflict_kind       text        not null check (conflict_kind in ('multiple_persons', 'oversized_component')),
    component_size      integer     not null,
    person_keys         uuid[]      not null default '{}',
    detected_at         timestamptz not null default clock_timestamp(),
    primary key (run_id, source_table, source_pk)
);
