/*
 * envelope.c - signed frames: "kasir1 <key_id> <hex hmac-sha256>\n<body>".
 *
 * The header is parsed strictly (one space between fields, key id of
 * [A-Za-z0-9._-], exactly 64 lower-case hex digits, then '\n') so that one
 * body has exactly one valid frame per key: there is no second spelling of
 * a header that an attacker could use to smuggle anything past a log or a
 * dedup.  The size bound is checked before any byte is looked at, and the
 * MAC is compared in constant time.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "envelope.h"
#include "err.h"

#define MAC_LEN     32 /* SHA-256 */
#define MAC_HEX_LEN (2 * MAC_LEN)

struct keyring_key {
	char id[ENVELOPE_KEY_ID_MAX + 1];
	uint8_t *key; /* NULL: slot free */
	size_t key_len;
};

struct keyring {
	struct keyring_key keys[ENVELOPE_KEYS_MAX];
	int signer; /* index into keys, -1 when none */
};

static bool
key_id_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static bool
key_id_valid(const char *id)
{
	size_t i;

	if (id == NULL)
		return false;
	for (i = 0; id[i] != '\0'; i++) {
		if (i >= ENVELOPE_KEY_ID_MAX || !key_id_char(id[i]))
			return false;
	}
	return i > 0;
}

/* Index of the key with id (id_len bytes, not NUL-terminated), or -1. */
static int
keyring_find(const struct keyring *kr, const char *id, size_t id_len)
{
	for (int i = 0; i < ENVELOPE_KEYS_MAX; i++) {
		const struct keyring_key *k = &kr->keys[i];

		if (k->key != NULL && strlen(k->id) == id_len &&
		    memcmp(k->id, id, id_len) == 0)
			return i;
	}
	return -1;
}

int
keyring_new(struct keyring **ret)
{
	struct keyring *kr;

	kr = calloc(1, sizeof(*kr));
	if (kr == NULL)
		return -ENOMEM;
	kr->signer = -1;
	*ret = kr;
	return 0;
}

static void
key_wipe(struct keyring_key *k)
{
	if (k->key != NULL) {
		OPENSSL_cleanse(k->key, k->key_len);
		free(k->key);
	}
	memset(k, 0, sizeof(*k));
}

void
keyring_free(struct keyring *kr)
{
	if (kr == NULL)
		return;
	for (int i = 0; i < ENVELOPE_KEYS_MAX; i++)
		key_wipe(&kr->keys[i]);
	OPENSSL_cleanse(kr, sizeof(*kr));
	free(kr);
}

int
keyring_add(struct keyring *kr, const char *id, const uint8_t *key,
            size_t key_len)
{
	int slot = -1;

	if (kr == NULL || !key_id_valid(id) || key == NULL ||
	    key_len < ENVELOPE_KEY_MIN)
		return -EINVAL;
	if (keyring_find(kr, id, strlen(id)) >= 0)
		return -EEXIST;
	for (int i = 0; i < ENVELOPE_KEYS_MAX; i++) {
		if (kr->keys[i].key == NULL) {
			slot = i;
			break;
		}
	}
	if (slot < 0)
		return KASIR_ETOOBIG;
	kr->keys[slot].key = malloc(key_len);
	if (kr->keys[slot].key == NULL)
		return -ENOMEM;
	memcpy(kr->keys[slot].key, key, key_len);
	kr->keys[slot].key_len = key_len;
	memcpy(kr->keys[slot].id, id, strlen(id) + 1);
	return 0;
}

int
keyring_remove(struct keyring *kr, const char *id)
{
	int i;

	if (kr == NULL || id == NULL)
		return -EINVAL;
	i = keyring_find(kr, id, strlen(id));
	if (i < 0)
		return KASIR_EKEY;
	key_wipe(&kr->keys[i]);
	if (kr->signer == i)
		kr->signer = -1;
	return 0;
}

int
keyring_set_signer(struct keyring *kr, const char *id)
{
	int i;

	if (kr == NULL || id == NULL)
		return -EINVAL;
	i = keyring_find(kr, id, strlen(id));
	if (i < 0)
		return KASIR_EKEY;
	kr->signer = i;
	return 0;
}

static int
mac_compute(const struct keyring_key *k, const char *body, size_t body_len,
            uint8_t mac[MAC_LEN])
{
	unsigned int mac_len = 0;

	if (k->key_len > (size_t)INT32_MAX)
		return -EINVAL;
	if (HMAC(EVP_sha256(), k->key, (int)k->key_len,
	         (const unsigned char *)body, body_len, mac,
	         &mac_len) == NULL ||
	    mac_len != MAC_LEN)
		return -EIO;
	return 0;
}

static void
hex_lower(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0x0f];
	}
}

/* Lower-case hex only: the header has exactly one spelling. */
static int
hex_lower_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int
envelope_seal(const struct keyring *kr, const char *body, size_t body_len,
              char **ret_frame, size_t *ret_len)
{
	const struct keyring_key *k;
	uint8_t mac[MAC_LEN];
	size_t id_len, hdr_len, pos;
	char *frame;
	int rc;

	if (kr == NULL || (body == NULL && body_len > 0) || kr->signer < 0)
		return -EINVAL;
	k = &kr->keys[kr->signer];
	id_len = strlen(k->id);
	hdr_len = sizeof(ENVELOPE_MAGIC) - 1 + 1 + id_len + 1 + MAC_HEX_LEN + 1;
	if (body_len > SIZE_MAX - hdr_len - 1)
		return KASIR_ETOOBIG;
	rc = mac_compute(k, body, body_len, mac);
	if (rc < 0)
		return rc;
	frame = malloc(hdr_len + body_len + 1);
	if (frame == NULL) {
		OPENSSL_cleanse(mac, sizeof(mac));
		return -ENOMEM;
	}
	pos = 0;
	memcpy(frame, ENVELOPE_MAGIC " ", sizeof(ENVELOPE_MAGIC));
	pos += sizeof(ENVELOPE_MAGIC);
	memcpy(frame + pos, k->id, id_len);
	pos += id_len;
	frame[pos++] = ' ';
	hex_lower(mac, MAC_LEN, frame + pos);
	pos += MAC_HEX_LEN;
	frame[pos++] = '\n';
	if (body_len > 0)
		memcpy(frame + pos, body, body_len);
	pos += body_len;
	frame[pos] = '\0'; /* convenience; not part of the frame */
	OPENSSL_cleanse(mac, sizeof(mac));
	*ret_frame = frame;
	*ret_len = pos;
	return 0;
}

int
envelope_open(const struct keyring *kr, const char *frame, size_t len,
              size_t max_frame, const char **ret_body, size_t *ret_body_len)
{
	const size_t magic_len = sizeof(ENVELOPE_MAGIC) - 1;
	uint8_t want[MAC_LEN], got[MAC_LEN];
	const char *id, *hex, *body;
	size_t id_len, pos, body_len;
	int ki, rc;

	/* The bound first: nothing of an oversized frame is looked at. */
	if (len > max_frame)
		return KASIR_ETOOBIG;
	if (kr == NULL || (frame == NULL && len > 0))
		return -EINVAL;

	if (len < magic_len + 1 ||
	    memcmp(frame, ENVELOPE_MAGIC, magic_len) != 0 ||
	    frame[magic_len] != ' ')
		return KASIR_EPROTO;
	pos = magic_len + 1;

	id = frame + pos;
	for (id_len = 0; pos + id_len < len && key_id_char(id[id_len]);
	     id_len++) {
		if (id_len >= ENVELOPE_KEY_ID_MAX)
			return KASIR_EPROTO;
	}
	if (id_len == 0 || pos + id_len >= len || id[id_len] != ' ')
		return KASIR_EPROTO;
	pos += id_len + 1;

	if (len - pos < MAC_HEX_LEN + 1)
		return KASIR_EPROTO;
	hex = frame + pos;
	for (size_t i = 0; i < MAC_LEN; i++) {
		int hi = hex_lower_value(hex[2 * i]);
		int lo = hex_lower_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return KASIR_EPROTO;
		got[i] = (uint8_t)(hi << 4 | lo);
	}
	pos += MAC_HEX_LEN;
	if (frame[pos] != '\n')
		return KASIR_EPROTO;
	pos++;
	body = frame + pos;
	body_len = len - pos;

	ki = keyring_find(kr, id, id_len);
	if (ki < 0)
		return KASIR_EKEY;
	rc = mac_compute(&kr->keys[ki], body, body_len, want);
	if (rc < 0)
		return rc;
	rc = CRYPTO_memcmp(want, got, MAC_LEN) == 0 ? 0 : KASIR_ESIG;
	OPENSSL_cleanse(want, sizeof(want));
	if (rc < 0)
		return rc;
	*ret_body = body;
	*ret_body_len = body_len;
	return 0;
}
