-- 0003: confirmation requests (kasir-order's confirm.request, issue 13).
-- kasir-order holds a notification that would move an order until the
-- Status API confirms it; the request lands here and the order is asked
-- about at once, whatever its schedule and even when it is final (a
-- refund of a PAID order), retried with the failure backoff until Midtrans
-- answers.  confirm_seq: the orders stream seq of the newest request
-- (NULL: none waiting); confirm_since: when the first unanswered one came.
ALTER TABLE recon.watch
	ADD COLUMN confirm_seq bigint,
	ADD COLUMN confirm_since timestamptz;
CREATE INDEX watch_confirm ON recon.watch (next_check_at)
	WHERE confirm_seq IS NOT NULL;
-- the answers sent because of a request
ALTER TABLE recon.status_check
	ADD COLUMN confirm boolean NOT NULL DEFAULT false;
