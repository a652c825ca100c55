/*
 * notification.c - parse, validate and verify one Midtrans notification.
 *
 * The order of the checks is fixed (issue 3): UTF-8 and JSON grammar with
 * bounded depth (prescan), then cJSON builds the tree, then duplicate keys,
 * then the fields the signature needs.  The signature check itself is
 * separate (notification_verify) so that the caller decides what a refused
 * signature costs (403, quarantine).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "err.h"
#include "json.h"
#include "json_string.h"
#include "notification.h"
#include "util.h"

static const char *const notif_codes[] = {
    [NOTIF_OK] = "ok",
    [NOTIF_MALFORMED_JSON] = "malformed_json",
    [NOTIF_NOT_AN_OBJECT] = "not_an_object",
    [NOTIF_MISSING_FIELD] = "missing_field",
    [NOTIF_WRONG_TYPE] = "wrong_type",
    [NOTIF_INVALID_ORDER_ID] = "invalid_order_id",
    [NOTIF_INVALID_UTF8] = "invalid_utf8",
    [NOTIF_DUPLICATE_KEY] = "duplicate_key",
    [NOTIF_TOO_DEEP] = "too_deep",
    [NOTIF_INVALID_STRING] = "invalid_string",
    [NOTIF_INVALID_FIELD] = "invalid_field",
    [NOTIF_INVALID_SIGNATURE_KEY] = "invalid_signature_key",
    [NOTIF_INCONSISTENT_STATUS] = "inconsistent_status",
};

const char *
notif_error_code(enum notif_error e)
{
	if ((size_t)e >= ARRAY_SIZE(notif_codes) || notif_codes[e] == NULL)
		return "invalid";
	return notif_codes[e];
}

static int __attribute__((format(printf, 3, 4)))
reject(struct notif_reject *why, enum notif_error code, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL) {
		why->code = code;
		va_start(ap, fmt);
		vsnprintf(why->message, sizeof(why->message), fmt, ap);
		va_end(ap);
	}
	return KASIR_EREJECT;
}

/* ---- prescan: UTF-8 + JSON grammar + depth, no allocation ---- */

struct scan {
	const unsigned char *p;
	const unsigned char *end;
	unsigned max_depth;
	struct notif_reject *why;
};

/* Length of the valid UTF-8 sequence at p (1..4), 0 when invalid (overlong,
 * surrogate, above U+10FFFF, truncated).  Bytes per RFC 3629 table 4. */
static size_t
utf8_seq_len(const unsigned char *p, const unsigned char *end)
{
	size_t avail = (size_t)(end - p);
	unsigned char c = p[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return (avail >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
	if (c >= 0xE0 && c <= 0xEF) {
		unsigned char lo = 0x80, hi = 0xBF;

		if (c == 0xE0)
			lo = 0xA0; /* overlong */
		else if (c == 0xED)
			hi = 0x9F; /* surrogates */
		if (avail < 3 || p[1] < lo || p[1] > hi ||
		    (p[2] & 0xC0) != 0x80)
			return 0;
		return 3;
	}
	if (c >= 0xF0 && c <= 0xF4) {
		unsigned char lo = 0x80, hi = 0xBF;

		if (c == 0xF0)
			lo = 0x90; /* overlong */
		else if (c == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
		if (avail < 4 || p[1] < lo || p[1] > hi ||
		    (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
			return 0;
		return 4;
	}
	return 0;
}

static void
scan_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
	                         *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* At '"'.  The body was already checked to be UTF-8 as a whole.  One
 * checker for kasir (common/json_string.c); a notification may carry
 * escaped newlines or tabs in its text fields, so only \u0000 and raw
 * control bytes are refused here. */
static int
scan_string(struct scan *s)
{
	const char *why = "bad string";

	switch (json_scan_string(&s->p, s->end, true, &why)) {
	case 0:
		return 0;
	case JSON_STRING_NUL:
		return reject(s->why, NOTIF_INVALID_STRING, "%s", why);
	case JSON_STRING_SURROGATE:
		return reject(s->why, NOTIF_INVALID_UTF8, "%s", why);
	default:
		return reject(s->why, NOTIF_MALFORMED_JSON, "%s", why);
	}
}

static int
scan_number(struct scan *s)
{
	const unsigned char *p = s->p;

#define DIGIT(x) ((x) >= '0' && (x) <= '9')
	if (p < s->end && *p == '-')
		p++;
	if (p >= s->end || !DIGIT(*p))
		goto bad;
	if (*p == '0')
		p++;
	else
		while (p < s->end && DIGIT(*p))
			p++;
	if (p < s->end && *p == '.') {
		p++;
		if (p >= s->end || !DIGIT(*p))
			goto bad;
		while (p < s->end && DIGIT(*p))
			p++;
	}
	if (p < s->end && (*p == 'e' || *p == 'E')) {
		p++;
		if (p < s->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= s->end || !DIGIT(*p))
			goto bad;
		while (p < s->end && DIGIT(*p))
			p++;
	}
#undef DIGIT
	s->p = p;
	return 0;
bad:
	return reject(s->why, NOTIF_MALFORMED_JSON, "bad number");
}

static int
scan_literal(struct scan *s, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
		return reject(s->why, NOTIF_MALFORMED_JSON, "unexpected token");
	s->p += n;
	return 0;
}

/* Recursion is bounded by max_depth (<= NOTIF_MAX_DEPTH frames). */
static int
scan_value(struct scan *s, unsigned depth)
{
	int r;

	scan_ws(s);
	if (s->p >= s->end)
		return reject(s->why, NOTIF_MALFORMED_JSON,
		              "unexpected end of input");
	switch (*s->p) {
	case '{':
	case '[': {
		unsigned char close = *s->p == '{' ? '}' : ']';
		bool object = close == '}';

		if (depth + 1 > s->max_depth)
			return reject(s->why, NOTIF_TOO_DEEP,
			              "nesting deeper than %u", s->max_depth);
		s->p++;
		scan_ws(s);
		if (s->p < s->end && *s->p == close) {
			s->p++;
			return 0;
		}
		for (;;) {
			if (object) {
				scan_ws(s);
				if (s->p >= s->end || *s->p != '"')
					return reject(s->why,
					              NOTIF_MALFORMED_JSON,
					              "expected a key");
				if ((r = scan_string(s)) < 0)
					return r;
				scan_ws(s);
				if (s->p >= s->end || *s->p != ':')
					return reject(s->why,
					              NOTIF_MALFORMED_JSON,
					              "expected ':'");
				s->p++;
			}
			if ((r = scan_value(s, depth + 1)) < 0)
				return r;
			scan_ws(s);
			if (s->p < s->end && *s->p == ',') {
				s->p++;
				continue;
			}
			if (s->p < s->end && *s->p == close) {
				s->p++;
				return 0;
			}
			return reject(s->why, NOTIF_MALFORMED_JSON,
			              "expected ',' or '%c'", close);
		}
	}
	case '"':
		return scan_string(s);
	case 't':
		return scan_literal(s, "true");
	case 'f':
		return scan_literal(s, "false");
	case 'n':
		return scan_literal(s, "null");
	default:
		return scan_number(s);
	}
}

int
notif_prescan(const char *body, size_t len, unsigned max_depth,
              struct notif_reject *why)
{
	const unsigned char *p = (const unsigned char *)body;
	const unsigned char *end = p + len;
	struct scan s;
	int r;

	while (p < end) {
		size_t n = utf8_seq_len(p, end);

		if (n == 0)
			return reject(
			    why, NOTIF_INVALID_UTF8,
			    "invalid UTF-8 at byte %zu",
			    (size_t)(p - (const unsigned char *)body));
		p += n;
	}
	s.p = (const unsigned char *)body;
	s.end = end;
	s.max_depth = max_depth;
	s.why = why;
	if ((r = scan_value(&s, 0)) < 0)
		return r;
	scan_ws(&s);
	if (s.p != s.end)
		return reject(why, NOTIF_MALFORMED_JSON,
		              "trailing data after the JSON value");
	return 0;
}

/* ---- duplicate keys (after cJSON built the tree) ---- */

/* Every object in the tree, at every depth (bounded by the prescan), must
 * have unique keys. */
static int
check_duplicates(const cJSON *node, struct notif_reject *why)
{
	const char *key = NULL;
	int r = json_check_unique_keys(node, &key);

	if (r == KASIR_EREJECT) {
		/* Key names are bounded by the body; print a short, safe
		 * prefix only when it is a plain token. */
		bool plain = strlen(key) <= 40 && order_id_valid(key, 40);

		r = reject(why, NOTIF_DUPLICATE_KEY, "duplicate key%s%s%s",
		           plain ? " '" : "", plain ? key : "",
		           plain ? "'" : "");
	}
	return r;
}

/* ---- fields ---- */

/* Required fields, in the order they are checked. */
static const char *const required_fields[] = {
    "order_id",      "status_code",        "gross_amount",
    "signature_key", "transaction_status",
};

static bool
lower_hex(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return true;
}

/* Gets an optional string field: absent or null gives NULL; anything but a
 * string is wrong_type. */
static int
optional_string(const cJSON *obj, const char *name, const char **ret,
                struct notif_reject *why)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

	if (it == NULL || cJSON_IsNull(it)) {
		*ret = NULL;
		return 0;
	}
	if (!cJSON_IsString(it))
		return reject(why, NOTIF_WRONG_TYPE,
		              "field '%s' must be a string", name);
	if (strlen(it->valuestring) > NOTIF_FIELD_MAX)
		return reject(why, NOTIF_INVALID_FIELD,
		              "field '%s' longer than %d", name,
		              NOTIF_FIELD_MAX);
	*ret = it->valuestring;
	return 0;
}

static int
validate_fields(const cJSON *obj, struct notification *n,
                struct notif_reject *why)
{
	const char *vals[ARRAY_SIZE(required_fields)];
	size_t i, len;
	int r;

	for (i = 0; i < ARRAY_SIZE(required_fields); i++) {
		const cJSON *it =
		    cJSON_GetObjectItemCaseSensitive(obj, required_fields[i]);

		if (it == NULL)
			return reject(why, NOTIF_MISSING_FIELD,
			              "field '%s' is missing",
			              required_fields[i]);
		if (!cJSON_IsString(it))
			return reject(why, NOTIF_WRONG_TYPE,
			              "field '%s' must be a string",
			              required_fields[i]);
		vals[i] = it->valuestring;
	}
	n->order_id = vals[0];
	n->status_code = vals[1];
	n->gross_amount = vals[2];
	n->signature_key = vals[3];
	n->transaction_status = vals[4];

	if (!order_id_valid(n->order_id, NOTIF_ORDER_ID_MAX))
		return reject(why, NOTIF_INVALID_ORDER_ID,
		              "order_id must be 1..%d characters of "
		              "[A-Za-z0-9._~-]",
		              NOTIF_ORDER_ID_MAX);
	len = strlen(n->signature_key);
	if (len != NOTIF_SIGNATURE_HEXLEN || !lower_hex(n->signature_key, len))
		return reject(why, NOTIF_INVALID_SIGNATURE_KEY,
		              "signature_key must be %d lower-case hex digits",
		              NOTIF_SIGNATURE_HEXLEN);
	for (i = 1; i < ARRAY_SIZE(required_fields); i++) {
		if (i == 3)
			continue; /* signature_key: checked above */
		len = strlen(vals[i]);
		if (len == 0 || len > NOTIF_FIELD_MAX)
			return reject(why, NOTIF_INVALID_FIELD,
			              "field '%s' must be 1..%d characters",
			              required_fields[i], NOTIF_FIELD_MAX);
	}

	if ((r = optional_string(obj, "fraud_status", &n->fraud_status, why)) <
	        0 ||
	    (r = optional_string(obj, "payment_type", &n->payment_type, why)) <
	        0 ||
	    (r = optional_string(obj, "transaction_id", &n->transaction_id,
	                         why)) < 0 ||
	    (r = optional_string(obj, "currency", &n->currency, why)) < 0 ||
	    (r = optional_string(obj, "transaction_time", &n->transaction_time,
	                         why)) < 0 ||
	    (r = optional_string(obj, "settlement_time", &n->settlement_time,
	                         why)) < 0)
		return r;
	return 0;
}

int
notification_parse(const char *body, size_t len, struct notification *ret,
                   struct notif_reject *why)
{
	struct notification n = {0};
	const char *end = NULL;
	int r;

	if ((r = notif_prescan(body, len, NOTIF_MAX_DEPTH, why)) < 0)
		return r;
	n.obj = cJSON_ParseWithLengthOpts(body, len, &end, false);
	if (n.obj == NULL) {
		/* The prescan accepted it, so this is cJSON running out of
		 * memory or disagreeing on grammar: refuse either way. */
		return reject(why, NOTIF_MALFORMED_JSON, "unparseable JSON");
	}
	if (!cJSON_IsObject(n.obj)) {
		r = reject(why, NOTIF_NOT_AN_OBJECT,
		           "the body must be a JSON object");
		goto fail;
	}
	if ((r = check_duplicates(n.obj, why)) < 0)
		goto fail;
	if ((r = validate_fields(n.obj, &n, why)) < 0)
		goto fail;
	*ret = n;
	return 0;
fail:
	cJSON_Delete(n.obj);
	return r;
}

void
notification_fini(struct notification *n)
{
	if (n == NULL)
		return;
	cJSON_Delete(n->obj);
	memset(n, 0, sizeof(*n));
}

/* ---- signature ---- */

int
notif_signature(const char *order_id, const char *status_code,
                const char *gross_amount, const char *key, size_t key_len,
                char out[NOTIF_SIGNATURE_HEXLEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	int ok;

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, order_id, strlen(order_id)) == 1 &&
	     EVP_DigestUpdate(ctx, status_code, strlen(status_code)) == 1 &&
	     EVP_DigestUpdate(ctx, gross_amount, strlen(gross_amount)) == 1 &&
	     EVP_DigestUpdate(ctx, key, key_len) == 1 &&
	     EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 64;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		OPENSSL_cleanse(md, sizeof(md));
		return -ENOMEM;
	}
	hex_encode(md, mdlen, out);
	OPENSSL_cleanse(md, sizeof(md));
	return 0;
}

int
notification_verify(const struct notification *n, const struct notif_key *keys,
                    size_t nkeys, size_t *ret_index)
{
	char expect[NOTIF_SIGNATURE_HEXLEN + 1];
	size_t got_len = strlen(n->signature_key);
	size_t match = SIZE_MAX;
	int r;

	/* Every key is tried, matched or not, so the time taken does not
	 * depend on which key (if any) matched. */
	for (size_t i = 0; i < nkeys; i++) {
		r = notif_signature(n->order_id, n->status_code,
		                    n->gross_amount, keys[i].secret,
		                    keys[i].secret_len, expect);
		if (r < 0) {
			OPENSSL_cleanse(expect, sizeof(expect));
			return r;
		}
		if (ct_equal(expect, NOTIF_SIGNATURE_HEXLEN, n->signature_key,
		             got_len) &&
		    match == SIZE_MAX)
			match = i;
	}
	OPENSSL_cleanse(expect, sizeof(expect));
	if (match == SIZE_MAX)
		return KASIR_ESIG;
	*ret_index = match;
	return 0;
}

/* ---- content type ---- */

bool
notif_content_type_ok(const char *ctype)
{
	static const char json[] = "application/json";
	const char *p;

	if (ctype == NULL)
		return false;
	p = ctype;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, json, sizeof(json) - 1) != 0)
		return false;
	p += sizeof(json) - 1;
	while (*p == ' ' || *p == '\t')
		p++;
	return *p == '\0' || *p == ';';
}
