/* test_stream.h - helpers for the tests' stand-in stream producers. */
#ifndef KASIR_TEST_STREAM_H
#define KASIR_TEST_STREAM_H

#include <stdint.h>

struct kasir_db;

/*
 * The seq of the message just committed on schema.stream: the caller is
 * the only writer of its stream, so once the sequencer has emptied
 * stream_pending the message is the head.  0, or -ETIMEDOUT after 10 s.
 */
int test_wait_sequenced(struct kasir_db *db, const char *schema,
                        const char *stream, int64_t *ret_seq);

#endif
