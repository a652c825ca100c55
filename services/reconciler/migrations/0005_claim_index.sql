-- 0005: the claim reads indexes only (evidence.c, st_claim).  The
-- reconciliation-mode branch picks the non-final orders whose last check
-- is oldest; without this index it read every row of recon.watch, final
-- ones included, at every claim.
CREATE INDEX watch_last_check ON recon.watch
	((coalesce(last_check_at, created_at))) WHERE NOT final;
