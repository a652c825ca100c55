-- One audit shape for every daemon (docs/admin.md): orders.audit gains the
-- request's arguments (new rows only; the column is added, no row is
-- rewritten) and orders.audit_log shows the table under the common column
-- names (who, role, command, arguments, reason, incident, order, before,
-- after, result) that audit.list and kasirctl read.
ALTER TABLE orders.audit ADD COLUMN args jsonb;

CREATE VIEW orders.audit_log AS
	SELECT id, at, actor, role, cmd AS command, args, reason, incident,
	       order_id, before, after, result, error
	FROM orders.audit;

GRANT SELECT ON orders.audit_log TO kasir_order;
