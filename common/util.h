/*
 * util.h - small helpers: time, hex, constant-time compare, uuid, strings.
 */
#ifndef KASIR_UTIL_H
#define KASIR_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds: CLOCK_MONOTONIC and CLOCK_REALTIME. */
int64_t now_mono_ms(void);
/* Sleeps ms milliseconds, signals or not; nothing for <= 0. */
void sleep_ms(int64_t ms);
int64_t now_real_ms(void);
/* *ts = now on clock (a clockid_t) + ms (>= 0): a deadline for
 * pthread_cond_timedwait() and its kin. */
struct timespec;
void deadline_after_ms(int clock, int64_t ms, struct timespec *ts);
/* Initialises *cv to wait against CLOCK_MONOTONIC (deadlines from
 * deadline_after_ms(CLOCK_MONOTONIC, ...)): a wall clock set back does
 * not stretch a wait.  0 or a negative errno. */
int cond_init_monotonic(pthread_cond_t *cv);
/* RFC 3339 UTC with milliseconds: "2026-11-23T09:33:19.123Z"; buf >= 32. */
void time_rfc3339(int64_t real_ms, char *buf, size_t len);

/* The value of one hexadecimal digit, -1 when c is none. */
int hex_digit(char c);

/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void hex_encode(const uint8_t *in, size_t len, char *out);
/* 0 or -EINVAL (odd length, bad digit, out too small). */
int hex_decode(const char *in, size_t in_len, uint8_t *out, size_t out_len,
               size_t *ret_len);
/* Constant-time equality of two buffers of the same length (false if the
 * lengths differ; the length itself is not secret). */
bool ct_equal(const void *a, size_t a_len, const void *b, size_t b_len);

/* Random v4 uuid, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"; buf >= 37. */
int uuid_v4(char *buf, size_t len);

/* strlcpy semantics; returns strlen(src). */
size_t kasir_strlcpy(char *dst, const char *src, size_t size);
/* true when s is 1..max chars of [A-Za-z0-9._~-] (Midtrans order_id rule),
 * other than "." and ".." (a URL path's dot segments). */
bool order_id_valid(const char *s, size_t max);
/* Validates UTF-8 (no overlongs, no surrogates). */
bool utf8_valid(const char *s, size_t len);

/* Exponential backoff with full jitter: base * 2^attempt, capped, then a
 * random value in [cap/2, cap]. */
int64_t backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms);

#endif
