-- Append-only refusals at statement level.
--
-- 0001 refused UPDATE/DELETE with FOR EACH ROW triggers, which do not fire
-- when the statement matches no row: "DELETE FROM orders.audit" on an empty
-- table succeeded, so a probe (or an operator's script) could not tell an
-- append-only table from a writable one.  Statement-level triggers fire for
-- every UPDATE/DELETE statement, whatever it matches.  The runtime role
-- never had UPDATE/DELETE on these tables; this is the owner's guard rail.
DO $$
DECLARE t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['evidence','transitions','entitlement_events',
				 'unknown_notifications','audit'] LOOP
		EXECUTE format('DROP TRIGGER %I ON orders.%I', t || '_append_only', t);
		EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON orders.%I
			FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change()',
			t || '_append_only', t);
	END LOOP;
END $$;

-- Orders and entitlements are mutable (status, revoked_at) but never deleted.
DROP TRIGGER orders_no_delete ON orders.orders;
CREATE TRIGGER orders_no_delete BEFORE DELETE ON orders.orders
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();
DROP TRIGGER entitlements_no_delete ON orders.entitlements;
CREATE TRIGGER entitlements_no_delete BEFORE DELETE ON orders.entitlements
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();
CREATE TRIGGER entitlements_no_truncate BEFORE TRUNCATE ON orders.entitlements
	FOR EACH STATEMENT EXECUTE FUNCTION orders.refuse_change();
