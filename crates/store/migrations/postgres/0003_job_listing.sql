-- Listing jobs at scale (GET /api/v1/jobs pages and filters in SQL).
-- next_run_at: the job's next occurrence, written by the engine when a job is
-- saved and when its occurrences are recorded (NULL: none, or disabled).
ALTER TABLE jobs ADD COLUMN next_run_at BIGINT;
-- last_status: how the job's most recently ended run ended, kept by the
-- database itself on every ending, whichever statement writes it.
ALTER TABLE jobs ADD COLUMN last_status TEXT;
UPDATE jobs SET last_status = (
    SELECT r.status FROM runs r WHERE r.job_id = jobs.id AND r.status NOT IN ('queued', 'running')
    ORDER BY r.finished_at DESC, r.id DESC LIMIT 1);
CREATE FUNCTION runs_last_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs SET last_status = NEW.status WHERE id = NEW.job_id;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_last_status AFTER INSERT OR UPDATE OF status ON runs
    FOR EACH ROW WHEN (NEW.status NOT IN ('queued', 'running'))
    EXECUTE FUNCTION runs_last_status();

-- Each job's tags, for the tag filter (written with the definition).
CREATE TABLE job_tags (
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    tag    TEXT   NOT NULL,
    PRIMARY KEY (job_id, tag)
);
CREATE INDEX job_tags_tag ON job_tags(tag, job_id);
-- DISTINCT: a definition may repeat a tag.
INSERT INTO job_tags (job_id, tag)
    SELECT DISTINCT jobs.id, t.tag FROM jobs, jsonb_array_elements_text(COALESCE(jobs.definition::jsonb -> 'tags', '[]'::jsonb)) AS t(tag);

-- Unscheduled jobs sort after every scheduled one.
CREATE INDEX jobs_next_run ON jobs(COALESCE(next_run_at, 9223372036854775807), name);
