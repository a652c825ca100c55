-- 0008: an accepted refund is followed until Midtrans shows it.  A PAID
-- order has left the schedule (final), so after kasirctl refund only the
-- one forced check asked; when Midtrans had not applied the refund yet
-- and its notification was lost, the order stayed PAID with access.
-- refund_since: when the reconciler's Refund API call was accepted (NULL:
-- nothing to follow); refund_expected: the whole rupiah Midtrans should
-- then show as refunded (every refund accepted through kasir, summed).
-- While refund_since is set the order is checked at next_check_at, final
-- or not (schedule.c, sched_after_refund_answer), until an answer shows
-- the refund (evidence.c, refund_shown) or a week has passed.
ALTER TABLE recon.watch ADD COLUMN refund_since timestamptz,
	ADD COLUMN refund_expected bigint CHECK (refund_expected > 0);
CREATE INDEX watch_refund ON recon.watch (next_check_at)
	WHERE refund_since IS NOT NULL;
