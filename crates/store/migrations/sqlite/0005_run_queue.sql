-- The durable run queue (crates/engine/src/queue): queued runs are claimed in
-- order of due_at by a node (claimed_by) holding a lease it renews while the
-- run executes; an expired lease is rescued.
ALTER TABLE runs ADD COLUMN due_at INTEGER;
ALTER TABLE runs ADD COLUMN start_deadline INTEGER;
ALTER TABLE runs ADD COLUMN claimed_by TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER;
ALTER TABLE runs ADD COLUMN waiting_for TEXT;
UPDATE runs SET due_at = COALESCE(not_before, scheduled_for, created_at);
CREATE INDEX runs_queue ON runs(due_at, id) WHERE status = 'queued';
CREATE INDEX runs_deadline ON runs(start_deadline) WHERE status = 'queued';
CREATE INDEX runs_lease ON runs(lease_until) WHERE status = 'running';
CREATE INDEX runs_active_job ON runs(job_id) WHERE status = 'running';

-- Resource locks held by running runs: a holder row lives exactly as long as
-- its run runs (written on the claim, deleted on every ending).
CREATE TABLE run_locks (
    lock_name TEXT   NOT NULL,
    run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    -- The holders the claimant's job declared (1: exclusive).
    holders   INTEGER NOT NULL,
    PRIMARY KEY (lock_name, run_id)
) STRICT;
CREATE INDEX run_locks_run ON run_locks(run_id);
