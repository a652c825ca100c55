-- The SOP's incident template (section 8) asks who or what detected the
-- incident: an alert, `kasirctl doctor`, a customer, a person.  Recorded
-- when the incident is opened (kasirctl incident open --detected-by), or
-- at the latest when it is closed; set once, never changed.  A P0/P1
-- incident closes only with it, like the other template fields (NOT
-- VALID: incidents closed before this column existed stay as they were).
ALTER TABLE ops.incident
	ADD COLUMN detected_by text CHECK (length(detected_by) <= 200);
ALTER TABLE ops.incident
	ADD CONSTRAINT severe_needs_detected_by CHECK (closed_at IS NULL
		OR severity IN ('P2','P3')
		OR nullif(btrim(detected_by), '') IS NOT NULL) NOT VALID;

CREATE OR REPLACE FUNCTION ops.incident_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP <> 'UPDATE' THEN
		RAISE EXCEPTION 'ops.incident: % refused', TG_OP
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF OLD.closed_at IS NOT NULL THEN
		RAISE EXCEPTION 'ops.incident: INC-% is closed', OLD.id
			USING ERRCODE = 'check_violation';
	END IF;
	IF NEW.id <> OLD.id OR NEW.severity <> OLD.severity
	   OR NEW.title <> OLD.title OR NEW.opened_at <> OLD.opened_at
	   OR NEW.opened_by <> OLD.opened_by
	   OR (OLD.detected_by IS NOT NULL
	       AND NEW.detected_by IS DISTINCT FROM OLD.detected_by) THEN
		RAISE EXCEPTION 'ops.incident: only closing is allowed'
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	RETURN NEW;
END $$;

GRANT UPDATE (detected_by) ON ops.incident TO kasir_ctl;
