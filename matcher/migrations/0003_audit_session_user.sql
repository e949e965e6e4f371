-- Audit columns record who acted: with login users that `SET role` to a group role,
-- current_user is the group; session_user is the person (or service) that logged in.
alter table identity_origin_history alter column changed_by set default session_user;
alter table match_overrides alter column created_by set default session_user;
