/*
 * message.c - encode and decode the JSON body of every kasir message.
 *
 * The per-type field tables are generated from messages.def, so there is
 * one definition of each type: the encoder refuses what the decoder would
 * refuse and the other way round (both go through data_check()).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "message.h"
#include "util.h"

/* Integers travel as JSON numbers (IEEE doubles, exact to 2^53), but
 * cJSON 1.7.15 prints a number with 15 significant digits whenever that
 * reads back within DBL_EPSILON, so 16-digit integers would be silently
 * rounded on encode.  Only integers of at most 15 digits are accepted, on
 * both sides (seq at 1,000 msg/s lasts 30,000 years; amounts are far
 * smaller). */
#define MSG_INT_LIMIT 999999999999999.0 /* 10^15 - 1 */

enum field_kind { FK_STRING, FK_INT, FK_BOOL, FK_OBJECT };

struct msg_field {
	const char *name;
	enum field_kind kind;
	bool required;
};

struct msg_def {
	const char *name;
	const struct msg_field *fields;
	size_t nfields;
};

#define FS(n, r) {#n, FK_STRING, (r) != 0},
#define FI(n, r) {#n, FK_INT, (r) != 0},
#define FB(n, r) {#n, FK_BOOL, (r) != 0},
#define FO(n, r) {#n, FK_OBJECT, (r) != 0},
#define MSG(e, wire, fields)                                                   \
	static const struct msg_field fields_##e[] = {fields};
#include "messages.def"
#undef MSG
#undef FS
#undef FI
#undef FB
#undef FO

static const struct msg_def msg_defs[MSG_TYPE_COUNT] = {
    [MSG_UNKNOWN] = {"unknown", NULL, 0},
#define MSG(e, wire, fields)                                                   \
	[MSG_##e] = {wire, fields_##e, ARRAY_SIZE(fields_##e)},
#include "messages.def"
#undef MSG
};

/* The most fields one type lists (checked at compile time below). */
#define MSG_FIELDS_MAX 64
#define MSG(e, wire, fields)                                                   \
	_Static_assert(ARRAY_SIZE(fields_##e) <= MSG_FIELDS_MAX,               \
	               "message type " #e " lists too many fields");
#include "messages.def"
#undef MSG

/* Per type, its field numbers sorted by name, so that data_check() finds
 * a member's field by binary search in one pass over the members (one
 * strcmp() walk over every member per listed field was 10% of
 * kasir-order's CPU in a backlog drain).  Built once, read-only after. */
static unsigned char field_order[MSG_TYPE_COUNT][MSG_FIELDS_MAX];
static pthread_once_t field_order_once = PTHREAD_ONCE_INIT;

static void
field_order_build(void)
{
	for (int t = 0; t < MSG_TYPE_COUNT; t++) {
		const struct msg_def *d = &msg_defs[t];
		unsigned char *o = field_order[t];

		/* insertion sort: a few dozen names, once */
		for (size_t i = 0; i < d->nfields; i++) {
			size_t k = i;

			while (k > 0 && strcmp(d->fields[o[k - 1]].name,
			                       d->fields[i].name) > 0) {
				o[k] = o[k - 1];
				k--;
			}
			o[k] = (unsigned char)i;
		}
	}
}

/* The number of type t's field called name, -1 if it lists none. */
static int
field_find(enum msg_type t, const char *name)
{
	const struct msg_def *d = &msg_defs[t];
	size_t lo = 0, hi = d->nfields;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(d->fields[field_order[t][mid]].name, name);

		if (c == 0)
			return field_order[t][mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

const char *
msg_type_name(enum msg_type t)
{
	if ((int)t <= MSG_UNKNOWN || t >= MSG_TYPE_COUNT)
		return "unknown";
	return msg_defs[t].name;
}

enum msg_type
msg_type_from_name(const char *name)
{
	if (name == NULL)
		return MSG_UNKNOWN;
	for (int t = MSG_UNKNOWN + 1; t < MSG_TYPE_COUNT; t++) {
		if (strcmp(msg_defs[t].name, name) == 0)
			return (enum msg_type)t;
	}
	return MSG_UNKNOWN;
}

static bool
number_is_int(const cJSON *j)
{
	double d;

	if (!cJSON_IsNumber(j))
		return false;
	d = j->valuedouble;
	return isfinite(d) && d == floor(d) && d >= -MSG_INT_LIMIT &&
	       d <= MSG_INT_LIMIT;
}

static bool
stream_name_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];

		if (i >= MSG_STREAM_MAX - 1)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return i > 0;
}

/* 8-4-4-4-12 hex digits (either case), as PostgreSQL's uuid prints. */
static bool
uuid_valid(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		char c = s[i];

		if (i >= 36)
			return false;
		if (dash ? c != '-'
		         : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
		             (c >= 'A' && c <= 'F')))
			return false;
	}
	return i == 36;
}

static bool
digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

/* RFC 3339 in UTC: "YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z". */
static bool
rfc3339_utc_valid(const char *s)
{
	size_t len = strlen(s), i;

	if (len < 20 || len > 30)
		return false;
	if (!digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
	    !digits(s + 8, 2) || s[10] != 'T' || !digits(s + 11, 2) ||
	    s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' ||
	    !digits(s + 17, 2))
		return false;
	i = 19;
	if (s[i] == '.') {
		size_t f = 0;

		for (i++; s[i] >= '0' && s[i] <= '9'; i++)
			f++;
		if (f < 1 || f > 9)
			return false;
	}
	return s[i] == 'Z' && s[i + 1] == '\0';
}

/* The number of members of obj named name (cJSON keeps duplicates). */
static int
member_count(const cJSON *obj, const char *name, const cJSON **ret_first)
{
	const cJSON *c;
	int n = 0;

	*ret_first = NULL;
	cJSON_ArrayForEach(c, obj)
	{
		if (c->string != NULL && strcmp(c->string, name) == 0) {
			if (n++ == 0)
				*ret_first = c;
		}
	}
	return n;
}

static bool
field_type_ok(const struct msg_field *f, const cJSON *v)
{
	switch (f->kind) {
	case FK_STRING:
		return cJSON_IsString(v) && v->valuestring != NULL;
	case FK_INT:
		return number_is_int(v);
	case FK_BOOL:
		return cJSON_IsBool(v);
	case FK_OBJECT:
		return cJSON_IsObject(v);
	}
	return false;
}

/* data against the type's table: required fields present, every listed
 * field (when present and not null for optional ones) of its type, no
 * listed field twice.  Unlisted members are kept. */
static int
data_check(enum msg_type t, const cJSON *data)
{
	const struct msg_def *d = &msg_defs[t];
	const cJSON *seen[MSG_FIELDS_MAX] = {0};
	const cJSON *c;

	if (!cJSON_IsObject(data))
		return KASIR_EPROTO;
	pthread_once(&field_order_once, field_order_build);
	cJSON_ArrayForEach(c, data)
	{
		int i = c->string != NULL ? field_find(t, c->string) : -1;

		if (i < 0)
			continue;
		if (seen[i] != NULL)
			return KASIR_EPROTO; /* cJSON keeps duplicates */
		seen[i] = c;
	}
	for (size_t i = 0; i < d->nfields; i++) {
		const struct msg_field *f = &d->fields[i];
		const cJSON *v = seen[i];

		if (v == NULL || cJSON_IsNull(v)) {
			if (f->required)
				return KASIR_EPROTO;
			continue;
		}
		if (!field_type_ok(f, v))
			return KASIR_EPROTO;
	}
	return 0;
}

void
msg_free(struct kasir_msg *m)
{
	if (m == NULL)
		return;
	cJSON_Delete(m->body);
	free(m);
}

static const char *const header_keys[] = {"v",    "stream", "seq", "id",
                                          "type", "at",     "data"};

/* A header string member: present once, a string of 1..max-1 chars. */
static const char *
header_str(const cJSON *root, const char *name, size_t max)
{
	const cJSON *v;

	if (member_count(root, name, &v) != 1 || !cJSON_IsString(v) ||
	    v->valuestring == NULL)
		return NULL;
	if (v->valuestring[0] == '\0' || strlen(v->valuestring) >= max)
		return NULL;
	return v->valuestring;
}

int
msg_decode(const char *body, size_t len, struct kasir_msg **ret,
           char *unknown_type, size_t unknown_len)
{
	const cJSON *v, *c, *data;
	const char *end = NULL, *stream, *id, *at, *type;
	struct kasir_msg *m;
	cJSON *root;
	enum msg_type t;
	int rc;

	if (body == NULL || ret == NULL)
		return -EINVAL;
	/* JSON text is UTF-8; cJSON does not check it. */
	if (len == 0 || !utf8_valid(body, len))
		return KASIR_EPROTO;
	root = cJSON_ParseWithLengthOpts(body, len, &end, false);
	if (root == NULL)
		return KASIR_EPROTO;
	rc = KASIR_EPROTO;
	/* Nothing but whitespace after the value (and no NUL inside). */
	if (end == NULL || end < body || (size_t)(end - body) > len)
		goto fail;
	for (const char *p = end; p < body + len; p++) {
		if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
			goto fail;
	}
	if (!cJSON_IsObject(root))
		goto fail;
	/* Only the header members, each once. */
	cJSON_ArrayForEach(c, root)
	{
		bool known = false;

		for (size_t i = 0; i < ARRAY_SIZE(header_keys); i++) {
			if (c->string != NULL &&
			    strcmp(c->string, header_keys[i]) == 0)
				known = true;
		}
		if (!known)
			goto fail;
	}

	if (member_count(root, "v", &v) != 1 || !number_is_int(v) ||
	    v->valuedouble != KASIR_PROTO_VERSION)
		goto fail;
	stream = header_str(root, "stream", MSG_STREAM_MAX);
	if (stream == NULL || !stream_name_valid(stream))
		goto fail;
	if (member_count(root, "seq", &v) != 1 || !number_is_int(v) ||
	    v->valuedouble < 0)
		goto fail;
	id = header_str(root, "id", sizeof(m->id));
	if (id == NULL || !uuid_valid(id))
		goto fail;
	at = header_str(root, "at", sizeof(m->at));
	if (at == NULL || !rfc3339_utc_valid(at))
		goto fail;
	if (member_count(root, "data", &data) != 1 || !cJSON_IsObject(data))
		goto fail;
	if (member_count(root, "type", &c) != 1 || !cJSON_IsString(c) ||
	    c->valuestring == NULL)
		goto fail;
	type = c->valuestring;
	t = msg_type_from_name(type);
	if (t == MSG_UNKNOWN) {
		if (unknown_type != NULL && unknown_len > 0) {
			size_t cap = unknown_len < 64 ? unknown_len : 64;

			kasir_strlcpy(unknown_type, type, cap);
		}
		rc = KASIR_ETYPE;
		goto fail;
	}
	rc = data_check(t, data);
	if (rc < 0)
		goto fail;

	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	kasir_strlcpy(m->stream, stream, sizeof(m->stream));
	m->seq = (int64_t)v->valuedouble;
	kasir_strlcpy(m->id, id, sizeof(m->id));
	kasir_strlcpy(m->at, at, sizeof(m->at));
	m->type = t;
	m->body = root;
	m->data = (cJSON *)(uintptr_t)data; /* owned through body */
	*ret = m;
	return 0;
fail:
	cJSON_Delete(root);
	return rc;
}

int
msg_encode_full(const char *stream, int64_t seq, const char *id, const char *at,
                enum msg_type type, const struct cJSON *data, char **ret_body)
{
	cJSON *root = NULL, *copy;
	char *text;
	int rc;

	if (stream == NULL || id == NULL || at == NULL || ret_body == NULL ||
	    !stream_name_valid(stream) || seq < 0 ||
	    (double)seq > MSG_INT_LIMIT || !uuid_valid(id) ||
	    strlen(id) >= sizeof(((struct kasir_msg *)0)->id) ||
	    !rfc3339_utc_valid(at) || (int)type <= MSG_UNKNOWN ||
	    type >= MSG_TYPE_COUNT)
		return -EINVAL;
	rc = data_check(type, data);
	if (rc < 0)
		return rc;

	rc = -ENOMEM;
	root = cJSON_CreateObject();
	if (root == NULL)
		goto out;
	if (cJSON_AddNumberToObject(root, "v", KASIR_PROTO_VERSION) == NULL ||
	    cJSON_AddStringToObject(root, "stream", stream) == NULL ||
	    cJSON_AddNumberToObject(root, "seq", (double)seq) == NULL ||
	    cJSON_AddStringToObject(root, "id", id) == NULL ||
	    cJSON_AddStringToObject(root, "type", msg_type_name(type)) ==
	        NULL ||
	    cJSON_AddStringToObject(root, "at", at) == NULL)
		goto out;
	/* a reference: printed like a copy, never freed with root */
	copy = cJSON_CreateObjectReference(data->child);
	if (copy == NULL)
		goto out;
	if (!cJSON_AddItemToObject(root, "data", copy)) {
		cJSON_Delete(copy);
		goto out;
	}
	text = cJSON_PrintUnformatted(root);
	if (text == NULL)
		goto out;
	*ret_body = text;
	rc = 0;
out:
	cJSON_Delete(root);
	return rc;
}

int
msg_encode(const char *stream, int64_t seq, enum msg_type type,
           const struct cJSON *data, char **ret_body)
{
	char id[40], at[40];
	int rc;

	rc = uuid_v4(id, sizeof(id));
	if (rc < 0)
		return rc;
	time_rfc3339(now_real_ms(), at, sizeof(at));
	return msg_encode_full(stream, seq, id, at, type, data, ret_body);
}

static const cJSON *
data_member(const struct kasir_msg *m, const char *field)
{
	if (m == NULL || m->data == NULL || field == NULL)
		return NULL;
	return cJSON_GetObjectItemCaseSensitive(m->data, field);
}

const char *
msg_str(const struct kasir_msg *m, const char *field)
{
	const cJSON *v = data_member(m, field);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

int64_t
msg_int(const struct kasir_msg *m, const char *field)
{
	const cJSON *v = data_member(m, field);

	return number_is_int(v) ? (int64_t)v->valuedouble : 0;
}

bool
msg_bool(const struct kasir_msg *m, const char *field)
{
	return cJSON_IsTrue(data_member(m, field));
}

const struct cJSON *
msg_obj(const struct kasir_msg *m, const char *field)
{
	const cJSON *v = data_member(m, field);

	return cJSON_IsObject(v) ? v : NULL;
}
