-- One audit shape for every daemon (docs/admin.md): ingest.audit gains
-- order_id, before and after (added columns, no row rewritten; rows before
-- this migration have them NULL) and ingest.audit_log shows the table
-- under the common column names that audit.list and kasirctl read.
ALTER TABLE ingest.audit ADD COLUMN order_id text;
ALTER TABLE ingest.audit ADD COLUMN before jsonb;
ALTER TABLE ingest.audit ADD COLUMN after jsonb;

CREATE VIEW ingest.audit_log AS
	SELECT id, at, actor, role, cmd AS command, args, reason, incident,
	       order_id, before, after, result, error
	FROM ingest.audit;

GRANT SELECT ON ingest.audit_log TO kasir_ingest;
