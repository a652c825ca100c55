/*
 * test_evidence_archive.c - the evidence bundle's archive: what
 * ev_bundle_write produces is a tar(1)-readable archive that
 * ev_verify_buf accepts, and ANY change is refused: every single byte of
 * the archive flipped in turn (file data, manifest, signature, headers,
 * padding, end blocks), a file removed, a file added, another key.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "err.h"
#include "evidence_archive.h"
#include "testutil.h"

static const uint8_t KEY[] = "0123456789abcdef0123456789abcdef";
#define KEYLEN (sizeof(KEY) - 1)

struct blob {
	uint8_t *p;
	size_t n;
};

static struct blob
slurp(const char *path)
{
	struct blob b = {0};
	FILE *f = fopen(path, "rb");
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	b.p = malloc((size_t)n + 1);
	assert_non_null(b.p);
	b.n = fread(b.p, 1, (size_t)n, f);
	assert_int_equal(b.n, (size_t)n);
	fclose(f);
	return b;
}

/* Writes a bundle of the named files (content: name repeated to len) and
 * returns the archive's bytes. */
static struct blob
make(const char *dir, const char *file, const char *const *names,
     const size_t *lens, size_t count, const uint8_t *key, size_t key_len)
{
	struct ev_bundle b = {0};
	char path[512];

	for (size_t i = 0; i < count; i++) {
		uint8_t *d = malloc(lens[i] + 1);

		for (size_t k = 0; k < lens[i]; k++)
			d[k] = (uint8_t)names[i][k % strlen(names[i])];
		assert_int_equal(ev_bundle_add(&b, names[i], d, lens[i]), 0);
		free(d);
	}
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	unlink(path);
	assert_int_equal(ev_bundle_write(&b, "ev1", key, key_len, path), 0);
	ev_bundle_free(&b);
	return slurp(path);
}

/* Offsets of the member headers in a well-formed archive. */
static size_t
members(const struct blob *a, size_t *off, size_t max)
{
	size_t n = 0, o = 0;

	while (o + 512 <= a->n && a->p[o] != 0 && n < max) {
		size_t size = strtoul((const char *)a->p + o + 124, NULL, 8);

		off[n++] = o;
		o += 512 + (size + 511) / 512 * 512;
	}
	off[n] = o; /* the end blocks */
	return n;
}

static int
verify(const struct blob *a, char *why)
{
	return ev_verify_buf(a->p, a->n, KEY, KEYLEN, NULL, why, 256);
}

static const char *const NAMES[] = {"report.md", "order/order.json",
                                    "ingest/notification-1.json", "empty.json"};
static const size_t LENS[] = {700, 512, 1333, 0};

static void
test_roundtrip_and_tar(void **state)
{
	char dir[128], cmd[512], why[256] = "";
	size_t files = 0;
	struct blob a;

	(void)state;
	tu_mkdtemp(dir, sizeof(dir));
	a = make(dir, "b.tar", NAMES, LENS, 4, KEY, KEYLEN);
	assert_int_equal(a.n % 512, 0);
	assert_int_equal(
	    ev_verify_buf(a.p, a.n, KEY, KEYLEN, &files, why, sizeof(why)), 0);
	assert_int_equal(files, 4);
	snprintf(why, sizeof(why), "%s/b.tar", dir);
	assert_int_equal(ev_verify_file(why, KEY, KEYLEN, &files, why, 256), 0);
	/* tar(1) reads it and finds the same files */
	snprintf(cmd, sizeof(cmd),
	         "cd %s && mkdir x && tar -xf b.tar -C x && "
	         "cmp -s x/order/order.json /dev/stdin < x/order/order.json && "
	         "test $(wc -c < x/ingest/notification-1.json) = 1333 && "
	         "test -f x/MANIFEST && test -f x/MANIFEST.sig && "
	         "test ! -s x/empty.json",
	         dir);
	assert_int_equal(system(cmd), 0);
	/* a second write never overwrites */
	{
		struct ev_bundle b = {0};
		char p[256];

		snprintf(p, sizeof(p), "%s/b.tar", dir);
		assert_int_equal(ev_bundle_write(&b, "ev1", KEY, KEYLEN, p),
		                 -EEXIST);
	}
	free(a.p);
}

static void
test_every_byte_flipped_is_refused(void **state)
{
	char dir[128], why[256];
	struct blob a;
	size_t refused = 0;

	(void)state;
	tu_mkdtemp(dir, sizeof(dir));
	a = make(dir, "b.tar", NAMES, LENS, 4, KEY, KEYLEN);
	for (size_t i = 0; i < a.n; i++) {
		a.p[i] ^= 0x01;
		if (verify(&a, why) < 0)
			refused++;
		else
			fail_msg("byte %zu flipped: the archive still verifies",
			         i);
		a.p[i] ^= 0x01;
	}
	assert_int_equal(refused, a.n);
	assert_int_equal(verify(&a, why), 0);
	free(a.p);
}

static void
test_messages_name_the_change(void **state)
{
	char dir[128], why[256];
	size_t off[16];
	struct blob a;

	(void)state;
	tu_mkdtemp(dir, sizeof(dir));
	a = make(dir, "b.tar", NAMES, LENS, 4, KEY, KEYLEN);
	assert_int_equal(members(&a, off, 15), 6);
	/* one byte of a file's data */
	a.p[off[3] + 512 + 10] ^= 0x20;
	assert_int_equal(verify(&a, why), KASIR_EREJECT);
	assert_non_null(strstr(why, "order/order.json"));
	a.p[off[3] + 512 + 10] ^= 0x20;
	/* one byte of the manifest */
	a.p[off[0] + 512 + 20] ^= 0x01;
	assert_int_equal(verify(&a, why), KASIR_ESIG);
	a.p[off[0] + 512 + 20] ^= 0x01;
	/* another key */
	assert_int_equal(ev_verify_buf(a.p, a.n, (const uint8_t *)"other", 5,
	                               NULL, why, sizeof(why)),
	                 KASIR_ESIG);
	/* truncated: the end blocks gone */
	{
		struct blob t = {a.p, a.n - 1024};

		assert_true(verify(&t, why) < 0);
	}
	assert_int_equal(verify(&a, why), 0);
	free(a.p);
}

/* The manifest and signature of one bundle with the members of another:
 * a file missing, or one added. */
static void
test_missing_and_extra_file(void **state)
{
	char dir[128], why[256];
	size_t oa[16], ob[16], oc[16];
	struct blob a, b, c, x;

	(void)state;
	tu_mkdtemp(dir, sizeof(dir));
	a = make(dir, "a.tar", NAMES, LENS, 3, KEY, KEYLEN);
	b = make(dir, "b.tar", NAMES, LENS, 2, KEY, KEYLEN);
	c = make(dir, "c.tar", NAMES, LENS, 4, KEY, KEYLEN);
	assert_int_equal(members(&a, oa, 15), 5);
	assert_int_equal(members(&b, ob, 15), 4);
	assert_int_equal(members(&c, oc, 15), 6);

	/* missing: a's manifest + signature, b's files (3rd file absent) */
	x.n = oa[2] + (ob[4] - ob[2]) + 1024;
	x.p = calloc(1, x.n);
	memcpy(x.p, a.p, oa[2]);
	memcpy(x.p + oa[2], b.p + ob[2], ob[4] - ob[2]);
	assert_int_equal(verify(&x, why), KASIR_EREJECT);
	assert_non_null(strstr(why, "ingest/notification-1.json"));
	assert_non_null(strstr(why, "missing"));
	free(x.p);

	/* extra: all of a, then c's 4th file, then the end blocks */
	x.n = oa[5] + (oc[6] - oc[5]) + 1024;
	x.p = calloc(1, x.n);
	memcpy(x.p, a.p, oa[5]);
	memcpy(x.p + oa[5], c.p + oc[5], oc[6] - oc[5]);
	assert_int_equal(verify(&x, why), KASIR_EREJECT);
	assert_non_null(strstr(why, "empty.json"));
	free(x.p);

	free(a.p);
	free(b.p);
	free(c.p);
}

static void
test_bounds_and_names(void **state)
{
	struct ev_bundle b = {0};
	static const char *const bad[] = {
	    "",
	    "/abs",
	    "a/../b",
	    "x/",
	    "a//b",
	    "sp ace",
	    "MANIFEST",
	    "MANIFEST.sig",
	    "0123456789012345678901234567890123456789012345678901234567890123"
	    "456789012345678901234567890123456789"};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ev_bundle_add(&b, bad[i], "x", 1), -EINVAL);
	assert_int_equal(ev_bundle_add(&b, "a.json", "x", 1), 0);
	assert_int_equal(ev_bundle_add(&b, "a.json", "y", 1), -EINVAL);
	assert_int_equal(ev_bundle_add(&b, "big", "x", EV_TOTAL_MAX + 1u),
	                 KASIR_ETOOBIG);
	for (size_t i = 1; i < EV_FILES_MAX; i++) {
		char n[32];

		snprintf(n, sizeof(n), "f%zu", i);
		assert_int_equal(ev_bundle_add(&b, n, "x", 1), 0);
	}
	assert_int_equal(ev_bundle_add(&b, "one-too-many", "x", 1),
	                 KASIR_ETOOBIG);
	ev_bundle_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_and_tar),
	    cmocka_unit_test(test_every_byte_flipped_is_refused),
	    cmocka_unit_test(test_messages_name_the_change),
	    cmocka_unit_test(test_missing_and_extra_file),
	    cmocka_unit_test(test_bounds_and_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
