/*
 * envelope.h - the signed frame every kasir message travels in.
 *
 *   kasir1 <key_id> <hex hmac-sha256 of body>\n<body>
 *
 * The HMAC covers the body bytes exactly.  Receivers verify before parsing
 * (envelope_open) and accept any key id in their ring; rotation is: add the
 * new key everywhere, switch signers (keyring_set_signer), drop the old key.
 * Frames above max_frame are refused before anything is parsed.
 */
#ifndef KASIR_ENVELOPE_H
#define KASIR_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define ENVELOPE_MAGIC	      "kasir1"
#define ENVELOPE_KEY_ID_MAX   32
#define ENVELOPE_KEY_MIN      32 /* bytes of key material at least */
#define ENVELOPE_KEYS_MAX     8
#define ENVELOPE_FRAME_DEFAULT_MAX (1024 * 1024)

struct keyring;

int keyring_new(struct keyring **ret);
/* NULL is fine. Key material is wiped. */
void keyring_free(struct keyring *kr);
/* Copies key.  -EINVAL bad id / short key, -EEXIST duplicate id,
 * KASIR_ETOOBIG ring full. */
int keyring_add(struct keyring *kr, const char *id, const uint8_t *key,
		size_t key_len);
int keyring_remove(struct keyring *kr, const char *id);
/* KASIR_EKEY when id is not in the ring. */
int keyring_set_signer(struct keyring *kr, const char *id);

/* Builds a frame around body.  On success *ret_frame (caller frees) and
 * *ret_len are set.  -EINVAL when no signer is set. */
int envelope_seal(const struct keyring *kr, const char *body, size_t body_len,
		  char **ret_frame, size_t *ret_len);

/*
 * Verifies frame.  On success *ret_body points INTO frame (no copy) and
 * *ret_body_len is its length.  Errors: KASIR_ETOOBIG (len > max_frame),
 * KASIR_EPROTO (bad header), KASIR_EKEY (key id not in ring), KASIR_ESIG
 * (HMAC mismatch, compared in constant time).
 */
int envelope_open(const struct keyring *kr, const char *frame, size_t len,
		  size_t max_frame, const char **ret_body,
		  size_t *ret_body_len);

#endif
