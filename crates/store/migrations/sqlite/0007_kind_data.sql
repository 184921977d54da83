-- Job kinds as data: how a run ended and what it held outside Steward are
-- each kind's own JSON, so a new kind needs no column of its own.
-- outcome: the kind's account of the ending ({"exit_code": 0}, {"status": 204}).
-- handle: {"kind": ..., "data": ...}, what a crash leaves for the kind to
-- reconcile at the next start (a command's process group).
ALTER TABLE runs ADD COLUMN outcome TEXT;
ALTER TABLE runs ADD COLUMN handle TEXT;
UPDATE runs SET outcome = CASE
    WHEN http_status IS NOT NULL THEN json_object('status', http_status)
    WHEN signal IS NOT NULL THEN json_object('signal', signal)
    WHEN exit_code IS NOT NULL THEN json_object('exit_code', exit_code)
END;
UPDATE runs SET handle = json_object('kind', 'command', 'data', json_object('process_group', process_group))
WHERE process_group IS NOT NULL;
ALTER TABLE runs DROP COLUMN exit_code;
ALTER TABLE runs DROP COLUMN signal;
ALTER TABLE runs DROP COLUMN http_status;
ALTER TABLE runs DROP COLUMN process_group;
