-- A backlog lead can also leave the red KPI because a claim arrived (no link needed).
alter table recovery_queue drop constraint recovery_queue_status_check;
alter table recovery_queue add constraint recovery_queue_status_check
    check (status in ('pending', 'matched', 'failed', 'claimed'));
alter table recovery_queue add column closed_at timestamptz;
