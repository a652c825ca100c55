-- backbone test: one row per applied message.  Deliberately no UNIQUE on
-- n: a duplicate application must show up as a second row, and
-- applied_order records the order in which effects were applied.
CREATE TABLE bb_consumer.effects (
  applied_order bigserial PRIMARY KEY,
  n bigint NOT NULL,
  seq bigint NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
GRANT SELECT, INSERT ON bb_consumer.effects TO bb_consumer_rt;
GRANT USAGE ON SEQUENCE bb_consumer.effects_applied_order_seq TO bb_consumer_rt;
