/*
 * fuzz_envelope.c - libFuzzer target: a frame from the network, through
 * envelope_open() and msg_decode(), as a consumer would take it; and any
 * input sealed as a body must open again to the same bytes.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Icommon -Iproto \
 *     tests/fuzz/fuzz_envelope.c proto/envelope.c proto/message.c \
 *     common/util.c -lcjson -lcrypto -lm
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct keyring *
ring(void)
{
	static struct keyring *kr;
	static const uint8_t key[] = "fuzz-key-0123456789abcdef0123456789";

	if (kr == NULL) {
		if (keyring_new(&kr) < 0 ||
		    keyring_add(kr, "k1", key, sizeof(key) - 1) < 0 ||
		    keyring_set_signer(kr, "k1") < 0)
			abort();
	}
	return kr;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct keyring *kr = ring();
	const char *body = NULL;
	size_t body_len = 0, len = 0;
	struct kasir_msg *m = NULL;
	char *frame = NULL, name[64];

	/* as received */
	if (envelope_open(kr, (const char *)data, size, 4096, &body,
	                  &body_len) == 0 &&
	    msg_decode(body, body_len, &m, name, sizeof(name)) == 0)
		msg_free(m);

	/* any body: seal then open gives the body back; decode never
	 * crashes on what verifies */
	if (envelope_seal(kr, (const char *)data, size, &frame, &len) == 0) {
		if (envelope_open(kr, frame, len, len, &body, &body_len) != 0 ||
		    body_len != size || memcmp(body, data, size) != 0)
			abort();
		m = NULL;
		if (msg_decode(body, body_len, &m, name, sizeof(name)) == 0)
			msg_free(m);
		free(frame);
	}
	return 0;
}
