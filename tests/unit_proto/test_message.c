/*
 * test_message.c - message bodies (issue 2): every type of messages.def
 * round-trips; decode refuses missing fields, wrong types, unknown types,
 * trailing garbage and other versions; encode refuses what decode would.
 *
 * The sample data is generated from messages.def itself (the same X-macros
 * as proto/message.c), so a type added there is tested here automatically.
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
#include <cjson/cJSON.h>

#include "err.h"
#include "message.h"

enum kind { K_S, K_I, K_B, K_O };

struct field {
	const char *name;
	enum kind kind;
	int required;
};

#define FS(n, r)             {#n, K_S, r},
#define FI(n, r)             {#n, K_I, r},
#define FB(n, r)             {#n, K_B, r},
#define FO(n, r)             {#n, K_O, r},
#define MSG(e, wire, fields) static const struct field f_##e[] = {fields};
#include "messages.def"
#undef MSG

static const struct {
	enum msg_type type;
	const char *wire;
	const struct field *fields;
	size_t n;
} types[] = {
#define MSG(e, wire, fields)                                                   \
	{MSG_##e, wire, f_##e, sizeof(f_##e) / sizeof(f_##e[0])},
#include "messages.def"
#undef MSG
};
#undef FS
#undef FI
#undef FB
#undef FO

static const char ID[] = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f";
static const char AT[] = "2026-11-23T09:33:19.123Z";

/* A value of the given kind; i makes values differ per field. */
static cJSON *
value_of(enum kind k, size_t i)
{
	char s[32];
	cJSON *o;

	switch (k) {
	case K_S:
		snprintf(s, sizeof(s), "value-%zu", i);
		return cJSON_CreateString(s);
	case K_I:
		return cJSON_CreateNumber((double)(1000 + i));
	case K_B:
		return cJSON_CreateBool(i % 2);
	case K_O:
		o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "ref", (double)i);
		return o;
	}
	return NULL;
}

/* A value of some other kind than k. */
static cJSON *
wrong_value_of(enum kind k)
{
	switch (k) {
	case K_S:
		return cJSON_CreateNumber(7);
	case K_I:
		return cJSON_CreateString("7");
	case K_B:
		return cJSON_CreateNumber(1);
	case K_O:
		return cJSON_CreateArray();
	}
	return NULL;
}

static cJSON *
sample_data(size_t t, int with_optional)
{
	cJSON *d = cJSON_CreateObject();

	for (size_t i = 0; i < types[t].n; i++) {
		if (!types[t].fields[i].required && !with_optional)
			continue;
		cJSON_AddItemToObject(d, types[t].fields[i].name,
		                      value_of(types[t].fields[i].kind, i));
	}
	return d;
}

static void
check_getters(size_t t, const struct kasir_msg *m, int with_optional)
{
	for (size_t i = 0; i < types[t].n; i++) {
		const struct field *f = &types[t].fields[i];
		int present = f->required || with_optional;
		char s[32];

		switch (f->kind) {
		case K_S:
			snprintf(s, sizeof(s), "value-%zu", i);
			if (present)
				assert_string_equal(msg_str(m, f->name), s);
			else
				assert_null(msg_str(m, f->name));
			break;
		case K_I:
			assert_int_equal(msg_int(m, f->name),
			                 present ? (int64_t)(1000 + i) : 0);
			break;
		case K_B:
			assert_int_equal(msg_bool(m, f->name),
			                 present ? (int)(i % 2) : 0);
			break;
		case K_O:
			if (present)
				assert_non_null(msg_obj(m, f->name));
			else
				assert_null(msg_obj(m, f->name));
			break;
		}
	}
}

static void
test_round_trip_every_type(void **state)
{
	(void)state;
	assert_int_equal(sizeof(types) / sizeof(types[0]), MSG_TYPE_COUNT - 1);
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		assert_int_equal(msg_type_from_name(types[t].wire),
		                 types[t].type);
		assert_string_equal(msg_type_name(types[t].type),
		                    types[t].wire);
		for (int opt = 0; opt <= 1; opt++) {
			cJSON *d = sample_data(t, opt);
			struct kasir_msg *m = NULL;
			char *body = NULL;

			assert_int_equal(msg_encode_full("orders", 42, ID, AT,
			                                 types[t].type, d,
			                                 &body),
			                 0);
			assert_int_equal(
			    msg_decode(body, strlen(body), &m, NULL, 0), 0);
			assert_string_equal(m->stream, "orders");
			assert_int_equal(m->seq, 42);
			assert_string_equal(m->id, ID);
			assert_string_equal(m->at, AT);
			assert_int_equal(m->type, types[t].type);
			check_getters(t, m, opt);
			msg_free(m);
			free(body);

			/* msg_encode generates id and at that decode accepts */
			assert_int_equal(
			    msg_encode("ingest", 0, types[t].type, d, &body),
			    0);
			assert_int_equal(
			    msg_decode(body, strlen(body), &m, NULL, 0), 0);
			assert_int_equal(strlen(m->id), 36);
			assert_int_equal(m->seq, 0);
			msg_free(m);
			free(body);
			cJSON_Delete(d);
		}
	}
	assert_string_equal(msg_type_name(MSG_UNKNOWN), "unknown");
	assert_string_equal(msg_type_name(MSG_TYPE_COUNT), "unknown");
	assert_int_equal(msg_type_from_name("order.paidx"), MSG_UNKNOWN);
	assert_int_equal(msg_type_from_name(NULL), MSG_UNKNOWN);
}

/* Decodes the JSON text of root; returns msg_decode's rc. */
static int
decode_json(const cJSON *root)
{
	char *text = cJSON_PrintUnformatted(root);
	struct kasir_msg *m = NULL;
	int rc;

	assert_non_null(text);
	rc = msg_decode(text, strlen(text), &m, NULL, 0);
	if (rc == 0)
		assert_non_null(m);
	else
		assert_null(m);
	msg_free(m);
	free(text);
	return rc;
}

/* Every required field missing, and every field of a wrong type, is refused
 * by decode AND by encode. */
static void
test_missing_and_wrong_type_fields(void **state)
{
	(void)state;
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		for (size_t i = 0; i < types[t].n; i++) {
			const struct field *f = &types[t].fields[i];
			cJSON *d = sample_data(t, 1), *root;
			char *body = NULL;

			assert_int_equal(msg_encode_full("orders", 1, ID, AT,
			                                 types[t].type, d,
			                                 &body),
			                 0);
			root = cJSON_Parse(body);
			free(body);
			body = NULL;

			/* wrong type */
			cJSON_ReplaceItemInObjectCaseSensitive(
			    cJSON_GetObjectItemCaseSensitive(root, "data"),
			    f->name, wrong_value_of(f->kind));
			assert_int_equal(decode_json(root), KASIR_EPROTO);
			cJSON_ReplaceItemInObjectCaseSensitive(
			    d, f->name, wrong_value_of(f->kind));
			assert_int_equal(msg_encode_full("orders", 1, ID, AT,
			                                 types[t].type, d,
			                                 &body),
			                 KASIR_EPROTO);
			assert_null(body);

			/* missing */
			cJSON_DeleteItemFromObjectCaseSensitive(
			    cJSON_GetObjectItemCaseSensitive(root, "data"),
			    f->name);
			cJSON_DeleteItemFromObjectCaseSensitive(d, f->name);
			assert_int_equal(decode_json(root),
			                 f->required ? KASIR_EPROTO : 0);
			assert_int_equal(msg_encode_full("orders", 1, ID, AT,
			                                 types[t].type, d,
			                                 &body),
			                 f->required ? KASIR_EPROTO : 0);
			free(body);
			body = NULL;

			/* a required field given twice (cJSON keeps both) */
			if (f->required) {
				cJSON *data = cJSON_GetObjectItemCaseSensitive(
				    root, "data");

				cJSON_AddItemToObject(data, f->name,
				                      value_of(f->kind, 0));
				assert_int_equal(decode_json(root), 0);
				cJSON_AddItemToObject(data, f->name,
				                      value_of(f->kind, 0));
				assert_int_equal(decode_json(root),
				                 KASIR_EPROTO);
			}
			cJSON_Delete(root);
			cJSON_Delete(d);
		}
	}
}

static void
test_integers(void **state)
{
	static const struct {
		double v;
		int ok;
	} cases[] = {
	    {0, 1},
	    {-5, 1},
	    /* the largest integers cJSON prints exactly (15 digits) */
	    {999999999999999.0, 1},
	    {-999999999999999.0, 1},
	    {123456789012345.0, 1},
	    {1000000000000000.0, 0},
	    {9007199254740992.0, 0},
	    {1.5, 0},
	    {1e300, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cJSON *d = cJSON_CreateObject();
		char *body = NULL;

		cJSON_AddNumberToObject(d, "n", cases[i].v);
		assert_int_equal(
		    msg_encode_full("s", 1, ID, AT, MSG_TEST_EFFECT, d, &body),
		    cases[i].ok ? 0 : KASIR_EPROTO);
		if (cases[i].ok) {
			struct kasir_msg *m = NULL;

			assert_int_equal(
			    msg_decode(body, strlen(body), &m, NULL, 0), 0);
			assert_int_equal(msg_int(m, "n"), (int64_t)cases[i].v);
			msg_free(m);
		}
		free(body);
		cJSON_Delete(d);
	}
}

/* Bodies written by hand: the header rules. */
static void
test_header_rules(void **state)
{
	static const struct {
		int rc;
		const char *text;
	} cases[] = {
#define H(v, stream, seq, type, data)                                          \
	"{\"v\":" v ",\"stream\":" stream ",\"seq\":" seq                      \
	",\"id\":\"3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f\",\"type\":" type      \
	",\"at\":\"2026-11-23T09:33:19.123Z\",\"data\":" data "}"
	    {0, H("1", "\"orders\"", "7", "\"test.effect\"", "{\"n\":1}")},
	    {0, H("1", "\"orders\"", "7", "\"test.effect\"",
	          "{\"n\":1,\"extra\":[1,2]}")},
	    {0, " " H("1", "\"orders\"", "7", "\"test.effect\"",
	              "{\"n\":1}") " \n\t"},
	    /* trailing garbage */
	    {KASIR_EPROTO,
	     H("1", "\"orders\"", "7", "\"test.effect\"", "{\"n\":1}") "x"},
	    {KASIR_EPROTO,
	     H("1", "\"orders\"", "7", "\"test.effect\"", "{\"n\":1}") "{}"},
	    /* version */
	    {KASIR_EPROTO,
	     H("2", "\"orders\"", "7", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO,
	     H("0", "\"orders\"", "7", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO,
	     H("\"1\"", "\"orders\"", "7", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO,
	     H("1.5", "\"orders\"", "7", "\"test.effect\"", "{\"n\":1}")},
	    /* stream */
	    {KASIR_EPROTO,
	     H("1", "\"Orders\"", "7", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO, H("1", "\"\"", "7", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO, H("1", "\"a-very-long-stream-name-over-31c\"", "7",
	                     "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO, H("1", "7", "7", "\"test.effect\"", "{\"n\":1}")},
	    /* seq */
	    {KASIR_EPROTO,
	     H("1", "\"orders\"", "-1", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO,
	     H("1", "\"orders\"", "7.5", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO,
	     H("1", "\"orders\"", "\"7\"", "\"test.effect\"", "{\"n\":1}")},
	    {KASIR_EPROTO, H("1", "\"orders\"", "18014398509481984",
	                     "\"test.effect\"", "{\"n\":1}")},
	    /* type */
	    {KASIR_ETYPE,
	     H("1", "\"orders\"", "7", "\"order.exploded\"", "{\"n\":1}")},
	    {KASIR_EPROTO, H("1", "\"orders\"", "7", "3", "{\"n\":1}")},
	    /* data */
	    {KASIR_EPROTO, H("1", "\"orders\"", "7", "\"test.effect\"", "[]")},
	    {KASIR_EPROTO,
	     H("1", "\"orders\"", "7", "\"test.effect\"", "{\"n\":null}")},
	    {KASIR_EPROTO,
	     H("1", "\"orders\"", "7", "\"test.effect\"", "{\"n\":true}")},
#undef H
	    /* header fields missing, unknown, doubled */
	    {KASIR_EPROTO, "{\"v\":1,\"stream\":\"orders\",\"seq\":1,"
	                   "\"type\":\"test.effect\",\"at\":\"2026-11-23T09:33:"
	                   "19Z\",\"data\":{\"n\":1}}"},
	    {KASIR_EPROTO,
	     "{\"v\":1,\"stream\":\"orders\",\"seq\":1,\"id\":\"3f1c2d4e-5a6b-"
	     "4c7d-8e9f-0a1b2c3d4e5f\",\"type\":\"test.effect\",\"at\":\"2026-"
	     "11-23T09:33:19Z\",\"data\":{\"n\":1},\"x\":1}"},
	    {KASIR_EPROTO,
	     "{\"v\":1,\"v\":1,\"stream\":\"orders\",\"seq\":1,\"id\":"
	     "\"3f1c2d4e"
	     "-5a6b-4c7d-8e9f-0a1b2c3d4e5f\",\"type\":\"test.effect\",\"at\":"
	     "\"2026-11-23T09:33:19Z\",\"data\":{\"n\":1}}"},
	    {KASIR_EPROTO,
	     "{\"v\":1,\"stream\":\"orders\",\"seq\":1,\"id\":\"not-a-uuid\","
	     "\"type\":\"test.effect\",\"at\":\"2026-11-23T09:33:19Z\","
	     "\"data\":{\"n\":1}}"},
	    {KASIR_EPROTO,
	     "{\"v\":1,\"stream\":\"orders\",\"seq\":1,\"id\":\"3f1c2d4e-5a6b-"
	     "4c7d-8e9f-0a1b2c3d4e5f\",\"type\":\"test.effect\",\"at\":\"2026-"
	     "11-23 09:33:19\",\"data\":{\"n\":1}}"},
	    {KASIR_EPROTO, "[]"},
	    {KASIR_EPROTO, "not json"},
	    {KASIR_EPROTO, ""},
	    {KASIR_EPROTO, "{\"v\":1,"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kasir_msg *m = NULL;
		int rc = msg_decode(cases[i].text, strlen(cases[i].text), &m,
		                    NULL, 0);

		if (rc != cases[i].rc)
			fail_msg("case %zu: rc %d, want %d: %s", i, rc,
			         cases[i].rc, cases[i].text);
		msg_free(m);
	}
}

static void
test_unknown_type_named(void **state)
{
	const char text[] =
	    "{\"v\":1,\"stream\":\"orders\",\"seq\":1,\"id\":\"3f1c2d4e-5a6b-"
	    "4c7d-8e9f-0a1b2c3d4e5f\",\"type\":\"order.teleported\",\"at\":"
	    "\"2026-11-23T09:33:19Z\",\"data\":{}}";
	struct kasir_msg *m = NULL;
	char name[64] = "", tiny[6] = "";

	(void)state;
	assert_int_equal(msg_decode(text, strlen(text), &m, name, sizeof(name)),
	                 KASIR_ETYPE);
	assert_null(m);
	assert_string_equal(name, "order.teleported");
	assert_int_equal(msg_decode(text, strlen(text), &m, tiny, sizeof(tiny)),
	                 KASIR_ETYPE);
	assert_string_equal(tiny, "order"); /* truncated, NUL-terminated */
}

/* The length is honoured: bytes after len are not part of the body, and a
 * NUL or invalid UTF-8 inside it is refused. */
static void
test_length_and_bytes(void **state)
{
	cJSON *d = cJSON_CreateObject();
	struct kasir_msg *m = NULL;
	char *body = NULL, *buf;
	size_t len;

	(void)state;
	cJSON_AddNumberToObject(d, "n", 3);
	assert_int_equal(
	    msg_encode_full("s", 1, ID, AT, MSG_TEST_EFFECT, d, &body), 0);
	len = strlen(body);
	buf = malloc(len + 16);
	memcpy(buf, body, len);
	memcpy(buf + len, "garbage", 8);
	assert_int_equal(msg_decode(buf, len, &m, NULL, 0), 0);
	msg_free(m);
	m = NULL;
	assert_int_equal(msg_decode(buf, len + 7, &m, NULL, 0), KASIR_EPROTO);
	assert_int_equal(msg_decode(buf, len - 1, &m, NULL, 0), KASIR_EPROTO);
	buf[len] = '\0';
	assert_int_equal(msg_decode(buf, len + 1, &m, NULL, 0), KASIR_EPROTO);
	free(buf);
	free(body);
	body = NULL;

	/* invalid UTF-8 inside a string */
	{
		const char bad[] =
		    "{\"v\":1,\"stream\":\"s\",\"seq\":1,\"id\":\"3f1c2d4e-"
		    "5a6b-"
		    "4c7d-8e9f-0a1b2c3d4e5f\",\"type\":\"test.effect\",\"at\":"
		    "\"2026-11-23T09:33:19Z\",\"data\":{\"n\":1,\"x\":"
		    "\"\xc0\xaf\"}}";

		assert_int_equal(msg_decode(bad, strlen(bad), &m, NULL, 0),
		                 KASIR_EPROTO);
	}
	/* encode refuses bad header values */
	assert_int_equal(
	    msg_encode_full("BAD", 1, ID, AT, MSG_TEST_EFFECT, d, &body),
	    -EINVAL);
	assert_int_equal(
	    msg_encode_full("s", -1, ID, AT, MSG_TEST_EFFECT, d, &body),
	    -EINVAL);
	assert_int_equal(
	    msg_encode_full("s", 1, "x", AT, MSG_TEST_EFFECT, d, &body),
	    -EINVAL);
	assert_int_equal(
	    msg_encode_full("s", 1, ID, "yesterday", MSG_TEST_EFFECT, d, &body),
	    -EINVAL);
	assert_int_equal(msg_encode_full("s", 1, ID, AT, MSG_UNKNOWN, d, &body),
	                 -EINVAL);
	assert_int_equal(
	    msg_encode_full("s", 1, ID, AT, MSG_TEST_EFFECT, NULL, &body),
	    KASIR_EPROTO);
	assert_null(body);
	cJSON_Delete(d);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_every_type),
	    cmocka_unit_test(test_missing_and_wrong_type_fields),
	    cmocka_unit_test(test_integers),
	    cmocka_unit_test(test_header_rules),
	    cmocka_unit_test(test_unknown_type_named),
	    cmocka_unit_test(test_length_and_bytes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
