-- Core tables: jobs and their runs. Times are Unix milliseconds (UTC).

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT    NOT NULL UNIQUE,
    enabled         INTEGER NOT NULL,
    -- The whole JobDefinition as JSON; name and enabled are copied out for queries.
    definition      TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    -- The latest scheduled occurrence that was recorded; missed-run detection
    -- starts after it. NULL until the first occurrence.
    schedule_cursor INTEGER
) STRICT;

CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    status        TEXT    NOT NULL CHECK (status IN ('queued','running','succeeded','failed','timed_out','cancelled','abandoned','skipped')),
    trigger_kind  TEXT    NOT NULL CHECK (trigger_kind IN ('schedule','manual','retry','chain')),
    scheduled_for INTEGER,
    not_before    INTEGER,
    attempt       INTEGER NOT NULL DEFAULT 1,
    parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    exit_code     INTEGER,
    signal        INTEGER,
    http_status   INTEGER,
    error         TEXT,
    -- Process group of a running command, so a restart after a crash can stop
    -- what the crashed process left running.
    process_group INTEGER,
    output_truncated INTEGER NOT NULL DEFAULT 0,
    -- Last column: SQLite reads it (and its overflow pages) only when asked for.
    output        TEXT
) STRICT;

-- Exactly once per occurrence: one scheduled run per job and instant.
CREATE UNIQUE INDEX runs_occurrence ON runs(job_id, scheduled_for) WHERE trigger_kind = 'schedule';
CREATE INDEX runs_job ON runs(job_id, id);
CREATE INDEX runs_status ON runs(status, id);
CREATE INDEX runs_created ON runs(created_at);
-- Deleting a run (history pruning) makes SQLite look for runs naming it as their
-- parent (ON DELETE SET NULL); without this index that is a full scan per row.
CREATE INDEX runs_parent ON runs(parent_run_id);

-- A scheduled run moves its job's cursor in the same statement that records it,
-- so missed-run detection never disagrees with the runs that exist.
CREATE TRIGGER runs_schedule_cursor AFTER INSERT ON runs
WHEN NEW.trigger_kind = 'schedule' AND NEW.scheduled_for IS NOT NULL
BEGIN
    UPDATE jobs SET schedule_cursor = MAX(COALESCE(schedule_cursor, 0), NEW.scheduled_for)
    WHERE id = NEW.job_id;
END;
