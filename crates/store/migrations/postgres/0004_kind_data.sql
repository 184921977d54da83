-- Job kinds as data: how a run ended and what it held outside Steward are
-- each kind's own JSON, so a new kind needs no column of its own.
-- outcome: the kind's account of the ending ({"exit_code": 0}, {"status": 204}).
-- handle: {"kind": ..., "data": ...}, what a crash leaves for the kind to
-- reconcile at the next start (a command's process group).
-- Text, as on SQLite: the same statements serve both backends.
ALTER TABLE runs ADD COLUMN outcome TEXT;
ALTER TABLE runs ADD COLUMN handle TEXT;
UPDATE runs SET outcome = CASE
    WHEN http_status IS NOT NULL THEN jsonb_build_object('status', http_status)::text
    WHEN signal IS NOT NULL THEN jsonb_build_object('signal', signal)::text
    WHEN exit_code IS NOT NULL THEN jsonb_build_object('exit_code', exit_code)::text
END;
UPDATE runs SET handle = jsonb_build_object('kind', 'command', 'data', jsonb_build_object('process_group', process_group))::text
WHERE process_group IS NOT NULL;
ALTER TABLE runs DROP COLUMN exit_code;
ALTER TABLE runs DROP COLUMN signal;
ALTER TABLE runs DROP COLUMN http_status;
ALTER TABLE runs DROP COLUMN process_group;
