-- The process group of a running command, so a restart after a crash can stop
-- what the crashed process left running.
ALTER TABLE runs ADD COLUMN process_group INTEGER;
