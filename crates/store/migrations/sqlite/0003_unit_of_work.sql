-- Rules move out of the database into the services (see ARCHITECTURE.md, "the
-- unit of work"): the engine moves the schedule cursor itself, in the
-- transaction that records the occurrence.
DROP TRIGGER runs_schedule_cursor;

-- Which secrets each job's definition names, written with the job, so that
-- "no job uses this secret" is one indexed read in the deleting transaction.
CREATE TABLE job_secrets (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    secret TEXT    NOT NULL,
    PRIMARY KEY (job_id, secret)
) STRICT;
CREATE INDEX job_secrets_by_secret ON job_secrets(secret);

-- When an operator asked to cancel a running run: the change the "run.cancel"
-- audit record is written with.
ALTER TABLE runs ADD COLUMN cancel_requested_at INTEGER;
