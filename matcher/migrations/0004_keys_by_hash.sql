-- Source keys can be anything a source system sends, including values far longer than a
-- btree index entry may be (~2.7 kB). The matcher's own keys and indexes therefore use the
-- record's 64-bit record_uid (macro record_uid: md5 of "source_table:source_pk") and md5 of
-- the key, never the raw key itself. (source_table, source_pk) stays unique together.

alter table identity_links drop constraint identity_links_pkey;
alter table identity_links drop constraint identity_links_record_uid_key;
alter table identity_links add primary key (record_uid);
create unique index identity_links_source_key on identity_links (source_table, md5(source_pk));

alter table match_attempts add column record_uid bigint;
update match_attempts set record_uid = ('x' || left(md5(source_table || ':' || source_pk), 16))::bit(64)::bigint;
alter table match_attempts alter column record_uid set not null;
drop index match_attempts_record;
create index match_attempts_record on match_attempts (record_uid, attempted_at desc);

alter table recovery_queue drop constraint recovery_queue_pkey;
create unique index recovery_queue_source_key on recovery_queue (source_table, md5(source_pk));

alter table match_conflicts drop constraint match_conflicts_pkey;
alter table match_conflicts add column record_uid bigint;
update match_conflicts set record_uid = ('x' || left(md5(source_table || ':' || source_pk), 16))::bit(64)::bigint;
alter table match_conflicts alter column record_uid set not null;
alter table match_conflicts add primary key (run_id, record_uid);

alter table match_overrides drop constraint match_overrides_left_source_table_left_source_pk_right_sour_key;
create unique index match_overrides_pair on match_overrides
    (left_source_table, md5(left_source_pk), right_source_table, md5(right_source_pk));
