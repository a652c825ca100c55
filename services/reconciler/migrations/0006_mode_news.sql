-- 0006: only a notification that says something new counts as "webhooks
-- flow" for the automatic reconciliation mode (mode.c).  Before, every
-- stored notification moved recon.settings.last_ingest_at, a replayed old
-- one too, so replaying one genuine body every few seconds kept the mode
-- from starting while Midtrans's own notifications were lost (an outside
-- attack, 2026-12-07).
--
-- heard: the keys ("status:settlement") webhook notifications have said
-- for this order, at most 16 (watchlist.c, st_evidence); a notification
-- whose key is already there, or that finds the list full, is no news.
-- news_at: received_at of the newest notification that was news; the
-- orders consumer moves recon.settings.last_ingest_at to the newest
-- news_at of the orders of its batch.
ALTER TABLE recon.watch
	ADD COLUMN heard text[] NOT NULL DEFAULT '{}'
		CHECK (cardinality(heard) <= 16),
	ADD COLUMN news_at timestamptz;
COMMENT ON COLUMN recon.settings.last_ingest_at IS
	'received_at of the newest webhook notification that said something '
	'new for its order (recon.watch.news_at): the automatic mode''s '
	'"webhooks flow"';
