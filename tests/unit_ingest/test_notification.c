/*
 * test_notification.c - kasir-ingest's parser, validator, signature check,
 * content type and source-address rules (services/ingest/notification.c,
 * source.c, conf.c's CIDR parser).
 *
 * The Midtrans notification fixtures (tests/data/midtrans/notifications,
 * written by tests/data/midtrans/make-fixtures) are signed with the docs'
 * example server key; every one must parse, verify and pass the status
 * table.
 */
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "err.h"
#include "ingest.h"
#include "notification.h"

#define DOCS_KEY "askvnoibnosifnboseofinbofinfgbiufglnbfg"
#define DOCS_SIG                                                               \
	"edc076b21793ebe3e17926350f5b8ae67d902fe657b3d0aa31b932d5c127e237"     \
	"5d308a2bc94f3265ac2d80a1f181a79b997ac178a236fcff35af263fc4d4c231"

static const struct notif_key docs_key[] = {
    {.id = "docs", .secret = DOCS_KEY, .secret_len = sizeof(DOCS_KEY) - 1},
};

/* A valid body for order 1111 / 200 / 100000.00 signed with the docs key,
 * with extra (unknown) fields. */
static const char valid_body[] =
    "{\"order_id\":\"1111\",\"status_code\":\"200\","
    "\"gross_amount\":\"100000.00\",\"transaction_status\":\"settlement\","
    "\"signature_key\":\"" DOCS_SIG "\",\"payment_type\":\"gopay\","
    "\"future_field\":{\"nested\":[1,2,{\"x\":\"y\"}]},"
    "\"va_numbers\":[{\"bank\":\"bni\",\"va_number\":\"123\"}]}";

static int
parse(const char *body, struct notification *n, struct notif_reject *why)
{
	return notification_parse(body, strlen(body), n, why);
}

/* ---- signature ---- */

static void
test_docs_worked_example(void **state)
{
	char out[NOTIF_SIGNATURE_HEXLEN + 1];

	(void)state;
	assert_int_equal(notif_signature("1111", "200", "100000.00", DOCS_KEY,
	                                 strlen(DOCS_KEY), out),
	                 0);
	assert_string_equal(out, DOCS_SIG);
}

static void
test_amount_without_decimals_differs(void **state)
{
	char with[NOTIF_SIGNATURE_HEXLEN + 1], without[sizeof(with)];
	char body[1024];
	struct notification n;
	struct notif_reject why;
	size_t idx = 99;

	(void)state;
	assert_int_equal(notif_signature("1111", "200", "100000", DOCS_KEY,
	                                 strlen(DOCS_KEY), without),
	                 0);
	assert_int_equal(notif_signature("1111", "200", "100000.00", DOCS_KEY,
	                                 strlen(DOCS_KEY), with),
	                 0);
	assert_string_not_equal(with, without);

	/* Body says 100000.00 but carries the signature of "100000": the
	 * signature covers the received string, so it must be refused. */
	snprintf(body, sizeof(body),
	         "{\"order_id\":\"1111\",\"status_code\":\"200\","
	         "\"gross_amount\":\"100000.00\",\"transaction_status\":"
	         "\"settlement\",\"signature_key\":\"%s\"}",
	         without);
	assert_int_equal(parse(body, &n, &why), 0);
	assert_int_equal(notification_verify(&n, docs_key, 1, &idx),
	                 KASIR_ESIG);
	assert_int_equal(idx, 99); /* not written on failure */
	notification_fini(&n);

	/* And the converse: "100000" in the body with the .00 signature. */
	snprintf(body, sizeof(body),
	         "{\"order_id\":\"1111\",\"status_code\":\"200\","
	         "\"gross_amount\":\"100000\",\"transaction_status\":"
	         "\"settlement\",\"signature_key\":\"%s\"}",
	         with);
	assert_int_equal(parse(body, &n, &why), 0);
	assert_int_equal(notification_verify(&n, docs_key, 1, &idx),
	                 KASIR_ESIG);
	notification_fini(&n);
}

static void
test_valid_body_and_rotation(void **state)
{
	struct notif_key keys[3] = {
	    {.id = "old", .secret = "not-the-key-0123456789", .secret_len = 22},
	    {.id = "docs", .secret = DOCS_KEY, .secret_len = strlen(DOCS_KEY)},
	    {.id = "other",
	     .secret = "another-wrong-key-xyz",
	     .secret_len = 21},
	};
	struct notification n;
	struct notif_reject why;
	size_t idx = 99;

	(void)state;
	assert_int_equal(parse(valid_body, &n, &why), 0);
	assert_string_equal(n.order_id, "1111");
	assert_string_equal(n.gross_amount, "100000.00");
	assert_string_equal(n.payment_type, "gopay");
	assert_null(n.fraud_status); /* absent is fine (cstore, klikbca) */
	/* unknown fields are kept in the object */
	assert_non_null(
	    cJSON_GetObjectItemCaseSensitive(n.obj, "future_field"));
	assert_non_null(cJSON_GetObjectItemCaseSensitive(n.obj, "va_numbers"));

	assert_int_equal(notification_verify(&n, keys, 3, &idx), 0);
	assert_int_equal(idx, 1);
	assert_int_equal(notification_verify(&n, keys, 1, &idx), KASIR_ESIG);
	assert_int_equal(notification_verify(&n, keys, 0, &idx), KASIR_ESIG);
	/* a key that is a prefix of the right one must not match */
	keys[0].secret = DOCS_KEY;
	keys[0].secret_len = strlen(DOCS_KEY) - 1;
	assert_int_equal(notification_verify(&n, keys, 1, &idx), KASIR_ESIG);
	notification_fini(&n);
	notification_fini(&n); /* zeroed: harmless */
}

static void
test_null_optional_is_absent(void **state)
{
	char body[1024];
	struct notification n;
	struct notif_reject why;

	(void)state;
	snprintf(
	    body, sizeof(body),
	    "{\"order_id\":\"1111\",\"status_code\":\"200\","
	    "\"gross_amount\":\"100000.00\",\"transaction_status\":"
	    "\"settlement\",\"signature_key\":\"%s\",\"fraud_status\":null}",
	    DOCS_SIG);
	assert_int_equal(parse(body, &n, &why), 0);
	assert_null(n.fraud_status);
	notification_fini(&n);
}

/* ---- refusals, one per reason code ---- */

struct bad_case {
	const char *name;
	const char *body; /* NULL: use raw/raw_len */
	const char *raw;
	size_t raw_len;
	enum notif_error code;
};

#define SIG "\"signature_key\":\"" DOCS_SIG "\""
#define REST                                                                   \
	"\"status_code\":\"200\",\"gross_amount\":\"100000.00\","              \
	"\"transaction_status\":\"settlement\"," SIG

#define NUL_BODY                                                               \
	"{\"order_id\":\"11\0"                                                 \
	"11\"}"

static const struct bad_case bad_cases[] = {
    {"empty", "", NULL, 0, NOTIF_MALFORMED_JSON},
    {"truncated", "{\"order_id\":\"1111\",", NULL, 0, NOTIF_MALFORMED_JSON},
    {"unterminated string", "{\"order_id\":\"11", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"trailing garbage", "{\"order_id\":\"1111\"," REST "} x", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"two objects", "{\"order_id\":\"1111\"," REST "}{}", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"trailing comma", "{\"order_id\":\"1111\"," REST ",}", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"single quotes", "{'order_id':'1111'}", NULL, 0, NOTIF_MALFORMED_JSON},
    {"bad number", "{\"order_id\":\"1111\",\"n\":01," REST "}", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"raw control char", "{\"order_id\":\"11\t11\"," REST "}", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"bad escape", "{\"order_id\":\"11\\x11\"," REST "}", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"NaN", "{\"order_id\":\"1111\",\"n\":NaN," REST "}", NULL, 0,
     NOTIF_MALFORMED_JSON},
    {"array",
     "["
     "{\"order_id\":\"1111\"," REST "}"
     "]",
     NULL, 0, NOTIF_NOT_AN_OBJECT},
    {"string", "\"hello\"", NULL, 0, NOTIF_NOT_AN_OBJECT},
    {"number", "42", NULL, 0, NOTIF_NOT_AN_OBJECT},
    {"null", "null", NULL, 0, NOTIF_NOT_AN_OBJECT},
    {"missing order_id", "{" REST "}", NULL, 0, NOTIF_MISSING_FIELD},
    {"missing signature",
     "{\"order_id\":\"1111\",\"status_code\":\"200\",\"gross_amount\":"
     "\"100000.00\",\"transaction_status\":\"settlement\"}",
     NULL, 0, NOTIF_MISSING_FIELD},
    {"missing transaction_status",
     "{\"order_id\":\"1111\",\"status_code\":\"200\",\"gross_amount\":"
     "\"100000.00\"," SIG "}",
     NULL, 0, NOTIF_MISSING_FIELD},
    {"number amount",
     "{\"order_id\":\"1111\",\"status_code\":\"200\",\"gross_amount\":"
     "100000.00,\"transaction_status\":\"settlement\"," SIG "}",
     NULL, 0, NOTIF_WRONG_TYPE},
    {"number status_code",
     "{\"order_id\":\"1111\",\"status_code\":200,\"gross_amount\":"
     "\"100000.00\",\"transaction_status\":\"settlement\"," SIG "}",
     NULL, 0, NOTIF_WRONG_TYPE},
    {"number order_id", "{\"order_id\":1111," REST "}", NULL, 0,
     NOTIF_WRONG_TYPE},
    {"null order_id", "{\"order_id\":null," REST "}", NULL, 0,
     NOTIF_WRONG_TYPE},
    {"object fraud_status",
     "{\"order_id\":\"1111\"," REST ",\"fraud_status\":{}}", NULL, 0,
     NOTIF_WRONG_TYPE},
    {"number currency", "{\"order_id\":\"1111\"," REST ",\"currency\":360}",
     NULL, 0, NOTIF_WRONG_TYPE},
    {"order_id with #", "{\"order_id\":\"11#11\"," REST "}", NULL, 0,
     NOTIF_INVALID_ORDER_ID},
    {"order_id with space", "{\"order_id\":\"11 11\"," REST "}", NULL, 0,
     NOTIF_INVALID_ORDER_ID},
    {"empty order_id", "{\"order_id\":\"\"," REST "}", NULL, 0,
     NOTIF_INVALID_ORDER_ID},
    {"order_id 51 chars",
     "{\"order_id\":"
     "\"123456789012345678901234567890123456789012345678901\"," REST "}",
     NULL, 0, NOTIF_INVALID_ORDER_ID},
    {"order_id with slash", "{\"order_id\":\"../etc\"," REST "}", NULL, 0,
     NOTIF_INVALID_ORDER_ID},
    {"duplicate order_id",
     "{\"order_id\":\"1111\",\"order_id\":\"2222\"," REST "}", NULL, 0,
     NOTIF_DUPLICATE_KEY},
    {"duplicate via escape",
     "{\"order_id\":\"1111\",\"order\\u005fid\":\"2222\"," REST "}", NULL, 0,
     NOTIF_DUPLICATE_KEY},
    {"duplicate nested",
     "{\"order_id\":\"1111\"," REST ",\"x\":{\"a\":1,\"b\":2,\"a\":3}}", NULL,
     0, NOTIF_DUPLICATE_KEY},
    {"nul escape", "{\"order_id\":\"1111\\u0000x\"," REST "}", NULL, 0,
     NOTIF_INVALID_STRING},
    {"lone high surrogate",
     "{\"order_id\":\"1111\",\"x\":\"\\ud800\"," REST "}", NULL, 0,
     NOTIF_INVALID_UTF8},
    {"lone low surrogate", "{\"order_id\":\"1111\",\"x\":\"\\udc00\"," REST "}",
     NULL, 0, NOTIF_INVALID_UTF8},
    {"bad signature length",
     "{\"order_id\":\"1111\",\"status_code\":\"200\",\"gross_amount\":"
     "\"100000.00\",\"transaction_status\":\"settlement\","
     "\"signature_key\":\"abc\"}",
     NULL, 0, NOTIF_INVALID_SIGNATURE_KEY},
    {"empty status_code",
     "{\"order_id\":\"1111\",\"status_code\":\"\",\"gross_amount\":"
     "\"100000.00\",\"transaction_status\":\"settlement\"," SIG "}",
     NULL, 0, NOTIF_INVALID_FIELD},
    /* raw byte cases */
    {"invalid utf8 byte", NULL, "{\"order_id\":\"1111\",\"x\":\"\xff\"}", 0,
     NOTIF_INVALID_UTF8},
    {"overlong slash", NULL, "{\"x\":\"\xc0\xaf\"}", 0, NOTIF_INVALID_UTF8},
    {"overlong 3-byte", NULL, "{\"x\":\"\xe0\x80\xaf\"}", 0,
     NOTIF_INVALID_UTF8},
    {"overlong 4-byte", NULL, "{\"x\":\"\xf0\x80\x80\xaf\"}", 0,
     NOTIF_INVALID_UTF8},
    {"utf16 surrogate bytes", NULL, "{\"x\":\"\xed\xa0\x80\"}", 0,
     NOTIF_INVALID_UTF8},
    {"above 10FFFF", NULL, "{\"x\":\"\xf4\x90\x80\x80\"}", 0,
     NOTIF_INVALID_UTF8},
    {"truncated sequence", NULL, "{\"x\":\"\xe2\x82\"}", 0, NOTIF_INVALID_UTF8},
    {"latin1 in key", NULL, "{\"caf\xe9\":\"1\"}", 0, NOTIF_INVALID_UTF8},
    {"embedded NUL byte", NULL, NUL_BODY, sizeof(NUL_BODY) - 1,
     NOTIF_MALFORMED_JSON},
};

static void
test_refusals(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		const char *b = c->body != NULL ? c->body : c->raw;
		size_t len = c->raw_len != 0 ? c->raw_len : strlen(b);
		struct notification n = {0};
		struct notif_reject why = {0};
		int r;

		r = notification_parse(b, len, &n, &why);
		if (r != KASIR_EREJECT || why.code != c->code)
			fail_msg("case '%s': got r=%d code=%s (%s), want %s",
			         c->name, r, notif_error_code(why.code),
			         why.message, notif_error_code(c->code));
		assert_null(n.obj); /* nothing handed out on failure */
	}
}

static void
test_unicode_escapes_accepted(void **state)
{
	char body[1024];
	struct notification n;
	struct notif_reject why;

	(void)state;
	/* a valid pair, a BMP escape and raw multi-byte UTF-8 */
	snprintf(body, sizeof(body),
	         "{\"order_id\":\"1111\",\"status_code\":\"200\","
	         "\"gross_amount\":\"100000.00\",\"transaction_status\":"
	         "\"settlement\",\"signature_key\":\"%s\","
	         "\"note\":\"\\ud83d\\ude00 \\u00e9 \xe2\x82\xac "
	         "\xf0\x9f\x98\x80\"}",
	         DOCS_SIG);
	assert_int_equal(parse(body, &n, &why), 0);
	notification_fini(&n);
}

/* Builds {"order_id":...,"d":[[[...]]]} with depth levels in total. */
static char *
nested_body(unsigned depth)
{
	size_t cap = 1024 + 2 * depth;
	char *b = malloc(cap);
	size_t off;

	assert_non_null(b);
	off =
	    (size_t)snprintf(b, cap, "{\"order_id\":\"1111\"," REST ",\"d\":");
	for (unsigned i = 1; i < depth; i++)
		b[off++] = '[';
	for (unsigned i = 1; i < depth; i++)
		b[off++] = ']';
	b[off++] = '}';
	b[off] = '\0';
	return b;
}

static void
test_depth_bound(void **state)
{
	struct notification n;
	struct notif_reject why;
	char *b;

	(void)state;
	b = nested_body(NOTIF_MAX_DEPTH);
	assert_int_equal(parse(b, &n, &why), 0);
	notification_fini(&n);
	free(b);

	b = nested_body(NOTIF_MAX_DEPTH + 1);
	assert_int_equal(parse(b, &n, &why), KASIR_EREJECT);
	assert_int_equal(why.code, NOTIF_TOO_DEEP);
	free(b);

	/* 100,000 levels: refused quickly, without deep recursion */
	b = nested_body(100000);
	assert_int_equal(parse(b, &n, &why), KASIR_EREJECT);
	assert_int_equal(why.code, NOTIF_TOO_DEEP);
	free(b);
}

static void
test_many_keys_is_fast_and_ok(void **state)
{
	/* 5,000 distinct keys: the duplicate check is O(n log n). */
	size_t cap = 5000 * 16 + 1024, off;
	char *b = malloc(cap);
	struct notification n;
	struct notif_reject why;

	(void)state;
	assert_non_null(b);
	off = (size_t)snprintf(b, cap, "{\"order_id\":\"1111\"," REST);
	for (int i = 0; i < 5000; i++)
		off += (size_t)snprintf(b + off, cap - off, ",\"k%d\":1", i);
	snprintf(b + off, cap - off, "}");
	assert_int_equal(parse(b, &n, &why), 0);
	notification_fini(&n);
	/* and the same with one duplicate at the very end */
	off = strlen(b) - 1;
	snprintf(b + off, cap - off, ",\"k17\":2}");
	assert_int_equal(parse(b, &n, &why), KASIR_EREJECT);
	assert_int_equal(why.code, NOTIF_DUPLICATE_KEY);
	free(b);
}

static void
test_error_codes_stable(void **state)
{
	(void)state;
	assert_string_equal(notif_error_code(NOTIF_MALFORMED_JSON),
	                    "malformed_json");
	assert_string_equal(notif_error_code(NOTIF_NOT_AN_OBJECT),
	                    "not_an_object");
	assert_string_equal(notif_error_code(NOTIF_MISSING_FIELD),
	                    "missing_field");
	assert_string_equal(notif_error_code(NOTIF_WRONG_TYPE), "wrong_type");
	assert_string_equal(notif_error_code(NOTIF_INVALID_ORDER_ID),
	                    "invalid_order_id");
	assert_string_equal(notif_error_code(NOTIF_INVALID_UTF8),
	                    "invalid_utf8");
	assert_string_equal(notif_error_code(NOTIF_DUPLICATE_KEY),
	                    "duplicate_key");
	assert_string_equal(notif_error_code(NOTIF_TOO_DEEP), "too_deep");
	assert_string_equal(notif_error_code((enum notif_error)999), "invalid");
}

/* ---- the Midtrans notification fixtures ---- */

static char *
slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	*ret_len = (size_t)n;
	return buf;
}

static void
test_fixtures(void **state)
{
	const char *dir = KASIR_TEST_DATA_DIR "/midtrans/notifications";
	char path[1024];
	struct dirent *de;
	DIR *d;
	int count = 0;

	(void)state;
	d = opendir(dir);
	if (d == NULL)
		fail_msg("%s: cannot open (tests/data/midtrans/make-fixtures "
		         "writes it)",
		         dir);
	while ((de = readdir(d)) != NULL) {
		size_t len = 0, idx = 99;
		struct notification n;
		struct notif_reject why = {0};
		char *body, *sig;
		const char *hex = "0123456789abcdef";

		if (strstr(de->d_name, ".json") == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		body = slurp(path, &len);
		assert_non_null(body);
		if (notification_parse(body, len, &n, &why) != 0)
			fail_msg("%s: refused: %s %s", de->d_name,
			         notif_error_code(why.code), why.message);
		if (notification_verify(&n, docs_key, 1, &idx) != 0)
			fail_msg("%s: signature does not verify", de->d_name);
		assert_int_equal(idx, 0);
		if (notification_check_status(&n, &why) != 0)
			fail_msg("%s: %s", de->d_name, why.message);
		notification_fini(&n);

		/* One character of signature_key changed (to another hex
		 * digit, so it still parses): refused by the signature. */
		sig = strstr(body, "\"signature_key\"");
		assert_non_null(sig);
		sig = strchr(sig + 15, '"');
		assert_non_null(sig);
		for (int pos = 1; pos <= NOTIF_SIGNATURE_HEXLEN;
		     pos += NOTIF_SIGNATURE_HEXLEN - 1) {
			char old = sig[pos];

			sig[pos] = strchr(hex, old)[1] != '\0'
			               ? strchr(hex, old)[1]
			               : '0';
			assert_int_equal(
			    notification_parse(body, len, &n, &why), 0);
			if (notification_verify(&n, docs_key, 1, &idx) !=
			    KASIR_ESIG)
				fail_msg("%s: flipped signature accepted",
				         de->d_name);
			notification_fini(&n);
			sig[pos] = old;
		}
		free(body);
		count++;
	}
	closedir(d);
	/* every shape make-fixtures writes: a missing file fails here */
	assert_int_equal(count, 15);
	print_message("%d fixtures verified\n", count);
}

/* ---- content type ---- */

static void
test_content_type(void **state)
{
	(void)state;
	assert_true(notif_content_type_ok("application/json"));
	assert_true(notif_content_type_ok("application/json; charset=utf-8"));
	assert_true(notif_content_type_ok("Application/JSON;charset=UTF-8"));
	assert_true(notif_content_type_ok("  application/json  "));
	assert_false(notif_content_type_ok(NULL));
	assert_false(notif_content_type_ok(""));
	assert_false(notif_content_type_ok("text/plain"));
	assert_false(notif_content_type_ok("application/jsonp"));
	assert_false(notif_content_type_ok("application/json-patch+json"));
	assert_false(
	    notif_content_type_ok("application/x-www-form-urlencoded"));
	assert_false(notif_content_type_ok("multipart/form-data; boundary=x"));
}

/* ---- source address ---- */

static void
test_source_addr(void **state)
{
	struct ingest_cidr nets[3];
	struct ingest_proxies px = {.items = nets, .count = 3};
	char out[64];

	(void)state;
	assert_int_equal(ingest_cidr_parse("127.0.0.1", &nets[0]), 0);
	assert_int_equal(ingest_cidr_parse("10.0.0.0/8", &nets[1]), 0);
	assert_int_equal(ingest_cidr_parse("fd00::/8", &nets[2]), 0);
	assert_int_equal(ingest_cidr_parse("10.0.0.0/33", &nets[0]), -EINVAL);
	assert_int_equal(ingest_cidr_parse("10.0.0.0/", &nets[0]), -EINVAL);
	assert_int_equal(ingest_cidr_parse("example.com", &nets[0]), -EINVAL);
	assert_int_equal(ingest_cidr_parse("::1/129", &nets[0]), -EINVAL);

	/* untrusted peer: headers ignored */
	ingest_source_addr(&px, "203.0.113.9", "1.2.3.4", "5.6.7.8", out,
	                   sizeof(out));
	assert_string_equal(out, "203.0.113.9");
	/* trusted proxy: last X-Forwarded-For entry */
	ingest_source_addr(&px, "127.0.0.1", "6.6.6.6, 198.51.100.7 ", NULL,
	                   out, sizeof(out));
	assert_string_equal(out, "198.51.100.7");
	ingest_source_addr(&px, "10.20.30.40", "198.51.100.8", "9.9.9.9", out,
	                   sizeof(out));
	assert_string_equal(out, "198.51.100.8");
	/* X-Real-IP when there is no X-Forwarded-For */
	ingest_source_addr(&px, "127.0.0.1", NULL, "2001:db8::1", out,
	                   sizeof(out));
	assert_string_equal(out, "2001:db8::1");
	/* garbage in the header: the peer */
	ingest_source_addr(&px, "127.0.0.1", "1.2.3.4, not-an-ip", NULL, out,
	                   sizeof(out));
	assert_string_equal(out, "127.0.0.1");
	ingest_source_addr(&px, "127.0.0.1", "", NULL, out, sizeof(out));
	assert_string_equal(out, "127.0.0.1");
	/* IPv4-mapped IPv6 peer counts as IPv4 (trusted) and normalises */
	ingest_source_addr(&px, "::ffff:127.0.0.1", "192.0.2.1", NULL, out,
	                   sizeof(out));
	assert_string_equal(out, "192.0.2.1");
	ingest_source_addr(&px, "::ffff:192.0.2.55", NULL, NULL, out,
	                   sizeof(out));
	assert_string_equal(out, "192.0.2.55");
	/* v6 network match */
	assert_true(ingest_addr_trusted(&px, "fd12::5"));
	assert_false(ingest_addr_trusted(&px, "fe80::1"));
	assert_false(ingest_addr_trusted(&px, "11.0.0.1"));
	/* no proxies at all */
	ingest_source_addr(NULL, "127.0.0.1", "1.2.3.4", NULL, out,
	                   sizeof(out));
	assert_string_equal(out, "127.0.0.1");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_docs_worked_example),
	    cmocka_unit_test(test_amount_without_decimals_differs),
	    cmocka_unit_test(test_valid_body_and_rotation),
	    cmocka_unit_test(test_null_optional_is_absent),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_unicode_escapes_accepted),
	    cmocka_unit_test(test_depth_bound),
	    cmocka_unit_test(test_many_keys_is_fast_and_ok),
	    cmocka_unit_test(test_error_codes_stable),
	    cmocka_unit_test(test_fixtures),
	    cmocka_unit_test(test_content_type),
	    cmocka_unit_test(test_source_addr),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
