-- Grants of migration "0003_stream_tick" to the daemon's runtime role: the
-- sequencer inserts, the publisher and the replay server read.
GRANT SELECT, INSERT ON {{schema}}.stream_tick TO "{{role}}";
