-- Names are looked up with lower(), the form both backends share
-- (crates/store/src/sql/): these indexes serve those lookups.
CREATE INDEX users_username_lower ON users(lower(username));
CREATE INDEX users_email_lower ON users(lower(email));
CREATE INDEX roles_name_lower ON roles(lower(name));
CREATE INDEX groups_name_lower ON groups(lower(name));

-- No two audit entries may name the same predecessor: a fork of the chain is
-- refused by the database itself, not only by the serialised writer.
CREATE UNIQUE INDEX audit_log_prev_hash ON audit_log(prev_hash);
