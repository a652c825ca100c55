-- One audit shape for every daemon (docs/admin.md): notify.audit_log shows
-- notify.audit under the common column names that audit.list and kasirctl
-- read; the order is the one named in the arguments.
CREATE VIEW notify.audit_log AS
	SELECT id, at, actor, role, command, args, reason, incident,
	       args->>'order_id' AS order_id, before, after, result, error
	FROM notify.audit;

GRANT SELECT ON notify.audit_log TO kasir_notifier;
