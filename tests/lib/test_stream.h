/* test_stream.h - helpers for the tests' stand-in stream producers. */
#ifndef KASIR_TEST_STREAM_H
#define KASIR_TEST_STREAM_H

#include <stdint.h>

struct kasir_db;

/*
 * The seq of the message just committed on schema.stream: the caller is
 * the only writer of its stream, so once the sequencer has numbered every
 * committed append the message is the head.  0, or -ETIMEDOUT after 10 s.
 */
int test_wait_sequenced(struct kasir_db *db, const char *schema,
                        const char *stream, int64_t *ret_seq);

/*
 * On SIGSEGV, SIGBUS, SIGILL or SIGFPE: writes to stderr the signal, the
 * faulting address, the instruction and stack pointers, the words at the
 * top of the stack (a call through a null pointer leaves its caller's
 * return address there), a backtrace and /proc/self/maps (to resolve the
 * addresses with addr2line), then dies of the signal as before.  For the
 * rare crash seen once in a whole-suite run (note on issue 17, 2026-12-07).
 */
void test_crash_report_install(void);

#endif
