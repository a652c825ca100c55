/*
 * fuzz_message.c - libFuzzer target for the message decoder
 * (proto/message.c msg_decode) on its own: the envelope's HMAC makes
 * random frames stop at envelope_open (fuzz_envelope covers that), so
 * here the input is the body a verified frame would carry.
 *
 * Promises checked: decode returns 0, KASIR_EPROTO, KASIR_ETYPE or
 * -ENOMEM; the unknown type name written back is NUL-terminated within
 * its buffer; a decoded message has a header the encoder accepts, so
 * re-encoding it (msg_encode_full with the same stream, seq, id, at,
 * type and data) succeeds and decodes again to the same header.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "err.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kasir_msg *m = NULL, *m2 = NULL;
	char name[64], *again = NULL, *t1, *t2;
	int r;

	if (size > 256 * 1024)
		return 0;
	memset(name, 'x', sizeof(name));
	r = msg_decode((const char *)data, size, &m, name, sizeof(name));
	if (r == KASIR_ETYPE) {
		if (memchr(name, '\0', sizeof(name)) == NULL || m != NULL)
			abort();
		return 0;
	}
	if (r != 0) {
		if ((r != KASIR_EPROTO && r != -ENOMEM) || m != NULL)
			abort();
		return 0;
	}
	if (m == NULL || m->data == NULL || !cJSON_IsObject(m->data) ||
	    m->type <= MSG_UNKNOWN || m->type >= MSG_TYPE_COUNT || m->seq < 0 ||
	    strcmp(msg_type_name(m->type), "unknown") == 0)
		abort();
	r = msg_encode_full(m->stream, m->seq, m->id, m->at, m->type, m->data,
	                    &again);
	if (r == -ENOMEM)
		goto out;
	if (r != 0)
		abort(); /* decode accepted what encode refuses */
	if (msg_decode(again, strlen(again), &m2, NULL, 0) != 0 ||
	    strcmp(m2->stream, m->stream) != 0 || m2->seq != m->seq ||
	    strcmp(m2->id, m->id) != 0 || strcmp(m2->at, m->at) != 0 ||
	    m2->type != m->type)
		abort();
	/* data compared as printed text: cJSON_Compare() looks members up
	 * by name, so it calls two identical objects different when an
	 * unlisted member appears twice (decode keeps those; see
	 * regressions/message/dup_unlisted_data_keys.json) */
	t1 = cJSON_PrintUnformatted(m->data);
	t2 = cJSON_PrintUnformatted(m2->data);
	if (t1 != NULL && t2 != NULL && strcmp(t1, t2) != 0)
		abort();
	cJSON_free(t1);
	cJSON_free(t2);
out:
	msg_free(m2);
	free(again);
	msg_free(m);
	return 0;
}
