-- backbone test: the producer's own state change, committed in the same
-- transaction as its stream message (n -> its position in stream_pending;
-- the seq exists only once the sequencer moved it to stream_out).
CREATE TABLE bb_producer.produced (
  n bigint PRIMARY KEY,
  pos bigint NOT NULL UNIQUE,
  writer int NOT NULL DEFAULT 0
);
GRANT SELECT, INSERT ON bb_producer.produced TO bb_producer_rt;
