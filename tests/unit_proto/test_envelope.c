/*
 * test_envelope.c - the signed frame (issue 2): any single-byte change is
 * rejected, unknown keys are rejected, rotation works, oversized frames are
 * refused before a byte is read, the header has exactly one spelling.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envelope.h"
#include "err.h"

static const uint8_t key_old[] = "0123456789abcdef0123456789abcdef-old";
static const uint8_t key_new[] = "fedcba9876543210fedcba9876543210-new";
static const char body[] =
    "{\"v\":1,\"stream\":\"orders\",\"seq\":42,\"type\":\"test.effect\","
    "\"data\":{\"n\":42}}";

static struct keyring *
ring_with(const char *id, const uint8_t *key, size_t key_len)
{
	struct keyring *kr = NULL;

	assert_int_equal(keyring_new(&kr), 0);
	assert_int_equal(keyring_add(kr, id, key, key_len), 0);
	assert_int_equal(keyring_set_signer(kr, id), 0);
	return kr;
}

static void
seal(const struct keyring *kr, const char *b, char **frame, size_t *len)
{
	assert_int_equal(envelope_seal(kr, b, strlen(b), frame, len), 0);
}

static void
test_keyring_rules(void **state)
{
	uint8_t big[64];
	struct keyring *kr = NULL;
	char id[40];
	char *frame = NULL;
	size_t len = 0;

	(void)state;
	memset(big, 'k', sizeof(big));
	assert_int_equal(keyring_new(&kr), 0);
	/* no signer yet */
	assert_int_equal(envelope_seal(kr, body, strlen(body), &frame, &len),
	                 -EINVAL);
	assert_null(frame);
	/* ids: [A-Za-z0-9._-], 1..32 */
	assert_int_equal(keyring_add(kr, "", big, sizeof(big)), -EINVAL);
	assert_int_equal(keyring_add(kr, "a b", big, sizeof(big)), -EINVAL);
	assert_int_equal(keyring_add(kr, "a/b", big, sizeof(big)), -EINVAL);
	assert_int_equal(keyring_add(kr, NULL, big, sizeof(big)), -EINVAL);
	memset(id, 'x', 33);
	id[33] = '\0';
	assert_int_equal(keyring_add(kr, id, big, sizeof(big)), -EINVAL);
	id[32] = '\0';
	assert_int_equal(keyring_add(kr, id, big, sizeof(big)), 0);
	/* keys: >= 32 bytes */
	assert_int_equal(keyring_add(kr, "short", big, ENVELOPE_KEY_MIN - 1),
	                 -EINVAL);
	assert_int_equal(keyring_add(kr, "Ok.key_1-x", big, ENVELOPE_KEY_MIN),
	                 0);
	assert_int_equal(keyring_add(kr, "Ok.key_1-x", big, sizeof(big)),
	                 -EEXIST);
	/* the ring holds ENVELOPE_KEYS_MAX keys */
	for (int i = 2; i < ENVELOPE_KEYS_MAX; i++) {
		snprintf(id, sizeof(id), "k%d", i);
		assert_int_equal(keyring_add(kr, id, big, sizeof(big)), 0);
	}
	assert_int_equal(keyring_add(kr, "one-too-many", big, sizeof(big)),
	                 KASIR_ETOOBIG);
	assert_int_equal(keyring_set_signer(kr, "nope"), KASIR_EKEY);
	assert_int_equal(keyring_remove(kr, "nope"), KASIR_EKEY);
	assert_int_equal(keyring_set_signer(kr, "k2"), 0);
	/* removing the signer leaves no signer */
	assert_int_equal(keyring_remove(kr, "k2"), 0);
	assert_int_equal(envelope_seal(kr, body, strlen(body), &frame, &len),
	                 -EINVAL);
	/* a freed slot is reusable */
	assert_int_equal(keyring_add(kr, "k2", big, sizeof(big)), 0);
	keyring_free(kr);
	keyring_free(NULL);
}

static void
test_round_trip_and_format(void **state)
{
	struct keyring *kr = ring_with("k1", key_old, sizeof(key_old) - 1);
	const char *got = NULL;
	size_t got_len = 0, len = 0;
	char *frame = NULL;

	(void)state;
	seal(kr, body, &frame, &len);
	/* "kasir1 k1 " + 64 lower-case hex + "\n" + body */
	assert_int_equal(len, strlen("kasir1 k1 ") + 64 + 1 + strlen(body));
	assert_memory_equal(frame, "kasir1 k1 ", 10);
	for (size_t i = 10; i < 74; i++)
		assert_non_null(strchr("0123456789abcdef", frame[i]));
	assert_int_equal(frame[74], '\n');
	assert_memory_equal(frame + 75, body, strlen(body));

	assert_int_equal(envelope_open(kr, frame, len, len, &got, &got_len), 0);
	assert_ptr_equal(got, frame + 75); /* points into the frame */
	assert_int_equal(got_len, strlen(body));

	/* the MAC is HMAC-SHA256(key, body): a known answer */
	{
		struct keyring *kv = NULL;
		static const uint8_t jefe[] =
		    "Jefe-Jefe-Jefe-Jefe-Jefe-Jefe-Jefe-Jefe";
		char *f2 = NULL;
		size_t l2 = 0;

		/* computed independently: printf 'what do ya want for
		 * nothing?' | openssl dgst -sha256 -hmac <key> */
		assert_int_equal(keyring_new(&kv), 0);
		assert_int_equal(
		    keyring_add(kv, "jefe", jefe, sizeof(jefe) - 1), 0);
		assert_int_equal(keyring_set_signer(kv, "jefe"), 0);
		seal(kv, "what do ya want for nothing?", &f2, &l2);
		assert_memory_equal(f2 + strlen("kasir1 jefe "),
		                    "fc5ac09b99a592ff8f9478480617f48d"
		                    "38733893ed809b4dab61d0395af19410",
		                    64);
		free(f2);
		keyring_free(kv);
	}
	free(frame);
	keyring_free(kr);
}

/* Issue 2: flipping ANY single byte of a frame makes it rejected. */
static void
test_every_byte_flip_rejected(void **state)
{
	static const uint8_t masks[] = {0x01, 0x02, 0x20, 0x40, 0x80, 0xff};
	struct keyring *kr = ring_with("k1", key_old, sizeof(key_old) - 1);
	size_t len = 0, checked = 0;
	char *frame = NULL;

	(void)state;
	seal(kr, body, &frame, &len);
	for (size_t i = 0; i < len; i++) {
		for (size_t k = 0; k < sizeof(masks); k++) {
			const char *got = NULL;
			size_t got_len = 0;
			int rc;

			frame[i] = (char)(frame[i] ^ masks[k]);
			rc = envelope_open(kr, frame, len, len, &got, &got_len);
			if (rc == 0)
				fail_msg("byte %zu ^ 0x%02x accepted", i,
				         masks[k]);
			assert_true(rc == KASIR_ESIG || rc == KASIR_EPROTO ||
			            rc == KASIR_EKEY);
			assert_null(got); /* written only on success */
			frame[i] = (char)(frame[i] ^ masks[k]);
			checked++;
		}
	}
	assert_int_equal(checked, len * sizeof(masks));
	/* the original still verifies: the loop really restored each byte */
	{
		const char *got = NULL;
		size_t got_len = 0;

		assert_int_equal(
		    envelope_open(kr, frame, len, len, &got, &got_len), 0);
	}
	/* truncation and extension are rejected too */
	{
		const char *got = NULL;
		size_t got_len = 0;
		char *longer = malloc(len + 1);

		assert_int_equal(
		    envelope_open(kr, frame, len - 1, len, &got, &got_len),
		    KASIR_ESIG);
		memcpy(longer, frame, len);
		longer[len] = ' ';
		assert_int_equal(
		    envelope_open(kr, longer, len + 1, len + 1, &got, &got_len),
		    KASIR_ESIG);
		free(longer);
	}
	free(frame);
	keyring_free(kr);
}

static void
test_unknown_key_rejected(void **state)
{
	struct keyring *signer = ring_with("k9", key_old, sizeof(key_old) - 1);
	struct keyring *rx = ring_with("k1", key_old, sizeof(key_old) - 1);
	const char *got = NULL;
	size_t got_len = 0, len = 0;
	char *frame = NULL;

	(void)state;
	/* same key material, different id: still unknown */
	seal(signer, body, &frame, &len);
	assert_int_equal(envelope_open(rx, frame, len, len, &got, &got_len),
	                 KASIR_EKEY);
	assert_null(got);
	free(frame);
	keyring_free(signer);
	keyring_free(rx);
}

/* Issue 2: accepted with both keys in the ring, rejected once the old key
 * is removed. */
static void
test_rotation(void **state)
{
	struct keyring *old_sender =
	    ring_with("old", key_old, sizeof(key_old) - 1);
	struct keyring *rx = ring_with("old", key_old, sizeof(key_old) - 1);
	const char *got = NULL;
	size_t got_len = 0, len = 0, len2 = 0;
	char *frame = NULL, *frame2 = NULL;

	(void)state;
	seal(old_sender, body, &frame, &len);
	assert_int_equal(envelope_open(rx, frame, len, len, &got, &got_len), 0);
	/* step 1: add the new key everywhere */
	assert_int_equal(keyring_add(rx, "new", key_new, sizeof(key_new) - 1),
	                 0);
	assert_int_equal(envelope_open(rx, frame, len, len, &got, &got_len), 0);
	/* step 2: switch signers */
	assert_int_equal(keyring_set_signer(rx, "new"), 0);
	seal(rx, body, &frame2, &len2);
	assert_memory_equal(frame2, "kasir1 new ", 11);
	assert_int_equal(envelope_open(rx, frame2, len2, len2, &got, &got_len),
	                 0);
	assert_int_equal(envelope_open(rx, frame, len, len, &got, &got_len), 0);
	/* step 3: drop the old key: old frames are refused */
	assert_int_equal(keyring_remove(rx, "old"), 0);
	got = NULL;
	assert_int_equal(envelope_open(rx, frame, len, len, &got, &got_len),
	                 KASIR_EKEY);
	assert_null(got);
	assert_int_equal(envelope_open(rx, frame2, len2, len2, &got, &got_len),
	                 0);
	/* a frame claiming "new" but made with the old key material */
	{
		struct keyring *forger =
		    ring_with("new", key_old, sizeof(key_old) - 1);
		char *f3 = NULL;
		size_t l3 = 0;

		seal(forger, body, &f3, &l3);
		assert_int_equal(envelope_open(rx, f3, l3, l3, &got, &got_len),
		                 KASIR_ESIG);
		free(f3);
		keyring_free(forger);
	}
	free(frame);
	free(frame2);
	keyring_free(old_sender);
	keyring_free(rx);
}

static void
test_oversized_before_parsing(void **state)
{
	struct keyring *kr = ring_with("k1", key_old, sizeof(key_old) - 1);
	const char *got = NULL;
	size_t got_len = 0, len = 0;
	char *frame = NULL;

	(void)state;
	/* A NULL frame with a huge length: rejected on the length alone, so
	 * nothing was read (a read would crash). */
	assert_int_equal(envelope_open(kr, NULL, ENVELOPE_FRAME_DEFAULT_MAX + 1,
	                               ENVELOPE_FRAME_DEFAULT_MAX, &got,
	                               &got_len),
	                 KASIR_ETOOBIG);
	seal(kr, body, &frame, &len);
	assert_int_equal(envelope_open(kr, frame, len, len - 1, &got, &got_len),
	                 KASIR_ETOOBIG);
	assert_null(got);
	assert_int_equal(envelope_open(kr, frame, len, len, &got, &got_len), 0);
	free(frame);
	keyring_free(kr);
}

/* The header has exactly one spelling. */
static void
test_strict_header(void **state)
{
	struct keyring *kr = ring_with("k1", key_old, sizeof(key_old) - 1);
	size_t len = 0;
	char *frame = NULL, buf[512];
	const char *got;
	size_t got_len;
	char hex[65];

	(void)state;
	seal(kr, body, &frame, &len);
	memcpy(hex, frame + 10, 64);
	hex[64] = '\0';

#define EXPECT(rc, ...)                                                        \
	do {                                                                   \
		int n_ = snprintf(buf, sizeof(buf), __VA_ARGS__);              \
		got = NULL;                                                    \
		assert_int_equal(envelope_open(kr, buf, (size_t)n_,            \
		                               sizeof(buf), &got, &got_len),   \
		                 (rc));                                        \
	} while (0)

	EXPECT(0, "kasir1 k1 %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1  k1 %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 k1  %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 k1 %s \n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 k1 %s\r\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 k1 %s%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir2 k1 %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "KASIR1 k1 %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1\tk1 %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 k1 %.63s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 k1 %s0\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1  %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 k1");
	EXPECT(KASIR_EPROTO, "%s", "");
	EXPECT(KASIR_EPROTO, "kasir1 k/1 %s\n%s", hex, body);
	EXPECT(KASIR_EPROTO, "kasir1 %s %s\n%s",
	       "k123456789012345678901234567890123", hex, body);
	/* upper-case hex is a second spelling: refused */
	for (int i = 0; i < 64; i++) {
		if (hex[i] >= 'a' && hex[i] <= 'f') {
			hex[i] = (char)(hex[i] - 'a' + 'A');
			EXPECT(KASIR_EPROTO, "kasir1 k1 %s\n%s", hex, body);
			hex[i] = (char)(hex[i] - 'A' + 'a');
			break;
		}
	}
	/* empty body: signed like any other */
	{
		char *f = NULL;
		size_t l = 0;

		assert_int_equal(envelope_seal(kr, "", 0, &f, &l), 0);
		assert_int_equal(envelope_open(kr, f, l, l, &got, &got_len), 0);
		assert_int_equal(got_len, 0);
		free(f);
	}
#undef EXPECT
	free(frame);
	keyring_free(kr);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_keyring_rules),
	    cmocka_unit_test(test_round_trip_and_format),
	    cmocka_unit_test(test_every_byte_flip_rejected),
	    cmocka_unit_test(test_unknown_key_rejected),
	    cmocka_unit_test(test_rotation),
	    cmocka_unit_test(test_oversized_before_parsing),
	    cmocka_unit_test(test_strict_header),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
