/*
 * message.h - typed kasir messages (the JSON body inside an envelope).
 *
 * Body: {"v":1,"stream":"orders","seq":42,"id":"<uuid>","type":"order.paid",
 *        "at":"2026-11-23T09:33:19.123Z","data":{...}}
 *
 * KASIR_PROTO_VERSION: bump when a field is removed or its meaning changes,
 * or a required field is added; receivers refuse other versions.  Adding
 * an optional field or a new type does not bump it (old receivers count
 * and drop unknown types).
 */
#ifndef KASIR_MESSAGE_H
#define KASIR_MESSAGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

struct cJSON;

#define KASIR_PROTO_VERSION 1
#define MSG_STREAM_MAX 32 /* stream names: [a-z0-9_-], < 32 chars */

enum msg_type {
	MSG_UNKNOWN = 0,
#define MSG(e, name, fields) MSG_##e,
#include "messages.def"
#undef MSG
	MSG_TYPE_COUNT
};

struct kasir_msg {
	char stream[MSG_STREAM_MAX];
	int64_t seq;
	char id[40];
	enum msg_type type;
	char at[40];
	struct cJSON *body; /* the whole body; owned by the message */
	struct cJSON *data; /* points into body */
};

/* "order.paid" for MSG_ORDER_PAID; "unknown" for anything else. */
const char *msg_type_name(enum msg_type t);
/* MSG_UNKNOWN when not a known name. */
enum msg_type msg_type_from_name(const char *name);

/*
 * Parses and validates a body (after envelope_open).  On success *ret
 * (free with msg_free) holds the message.  Errors: KASIR_EPROTO (not JSON,
 * trailing garbage, header field missing/wrong type, bad version, a
 * required data field missing or of the wrong type), KASIR_ETYPE (unknown
 * type; the type name is written to unknown_type if not NULL, <= 64 bytes).
 */
int msg_decode(const char *body, size_t len, struct kasir_msg **ret,
	       char *unknown_type, size_t unknown_len);
void msg_free(struct kasir_msg *m);

/*
 * Builds a body.  data is checked against the type's field table (so a
 * producer can never emit what consumers would refuse); on success
 * *ret_body is a malloc'd NUL-terminated JSON text (caller frees).  id is
 * generated, at = now.  data is borrowed (not modified, not freed).
 */
int msg_encode(const char *stream, int64_t seq, enum msg_type type,
	       const struct cJSON *data, char **ret_body);
/* Same with explicit id and at (replay of stored messages, tests). */
int msg_encode_full(const char *stream, int64_t seq, const char *id,
		    const char *at, enum msg_type type,
		    const struct cJSON *data, char **ret_body);

/* Typed getters over m->data.  Fields checked by msg_decode are present
 * with the right type when required; optional ones may be absent. */
const char *msg_str(const struct kasir_msg *m, const char *field); /* NULL if absent */
int64_t msg_int(const struct kasir_msg *m, const char *field);	  /* 0 if absent */
bool msg_bool(const struct kasir_msg *m, const char *field);
const struct cJSON *msg_obj(const struct kasir_msg *m, const char *field);

#endif
