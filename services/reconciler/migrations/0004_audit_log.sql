-- One audit shape for every daemon (docs/admin.md): recon.audit_log shows
-- recon.audit under the common column names that audit.list and kasirctl
-- read; the order is the one named in the arguments.
CREATE VIEW recon.audit_log AS
	SELECT id, at, actor, role, command, args, reason, incident,
	       args->>'order_id' AS order_id, before, after, result, error
	FROM recon.audit;

GRANT SELECT ON recon.audit_log TO kasir_reconciler;
