-- backbone test: the producer's own state change, committed in the same
-- transaction as its stream message (n -> seq).
CREATE TABLE bb_producer.produced (
  n bigint PRIMARY KEY,
  seq bigint NOT NULL UNIQUE
);
GRANT SELECT, INSERT ON bb_producer.produced TO bb_producer_rt;
