-- Migration 0014: the default mode's rule on transitions (0003,
-- transitions_need_status_api) is checked once per statement instead of
-- once per row (docs/performance.md, section (c)).  Same rule, same
-- refusal (SQLSTATE 23514, check_violation, the same message).
--
-- The rule: unless orders.settings says signature_only, every transition
-- names a Status API answer of the same order as its evidence: an
-- orders.evidence row of source recon and kind status, not_found or
-- expired, with the transition's evidence_id, order_id and evidence_ref.
--
-- Before: a BEFORE INSERT trigger per row, a plpgsql call with two queries
-- (the setting, the evidence) for every transition of a batch: 4.7% of
-- kasir-order's consumer backend in a backlog drain of 50,000 events
-- (perf).  Now one plpgsql call and one query per statement over its new
-- rows.  Evidence is append-only (0002) and written by an earlier
-- statement, so checking after the statement sees the same rows the row
-- trigger saw.  AFTER statement triggers fire in name order, so this one
-- (transitions_need_status_api) still answers before the reference check
-- (transitions_refs, 0013) when both would refuse, as the BEFORE trigger
-- did.
--
-- Each evidence check is a scalar subquery per new row, never turned into
-- a join (0013: the transition table has no statistics).
CREATE FUNCTION orders.check_transitions_proof() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	bad record;
BEGIN
	IF coalesce((SELECT s.signature_only FROM orders.settings s
		     WHERE s.id = 1), false) THEN
		RETURN NULL;
	END IF;
	SELECT n.order_id, n.from_status, n.to_status INTO bad
	FROM new_rows n
	WHERE n.evidence_source IS DISTINCT FROM 'recon'
	   OR (SELECT true FROM orders.evidence e
	       WHERE e.id = n.evidence_id
		 AND e.order_id = n.order_id
		 AND e.source = 'recon'
		 AND e.ref = n.evidence_ref
		 AND e.kind IN ('status', 'not_found', 'expired')) IS NULL
	LIMIT 1;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	RAISE EXCEPTION 'orders.transitions: % -> % of order % refused: its evidence is not a Status API answer (order.signature_only is off)',
		bad.from_status, bad.to_status, bad.order_id
		USING ERRCODE = 'check_violation';
END $$;

DROP TRIGGER transitions_need_status_api ON orders.transitions;
CREATE TRIGGER transitions_need_status_api AFTER INSERT ON orders.transitions
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION orders.check_transitions_proof();
DROP FUNCTION orders.check_transition_evidence();
