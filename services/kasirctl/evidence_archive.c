/*
 * evidence_archive.c - writing and verifying the evidence bundle: a ustar
 * archive with a signed manifest (evidence_archive.h).
 *
 * The writer is the smallest ustar that tar(1) reads: 512-byte headers with
 * name, mode 0444, size, mtime, typeflag '0' and the "ustar\0" "00" magic;
 * data padded with zeros to 512; two zero blocks at the end.  The verifier
 * is strict on purpose: anything it did not write (other member types,
 * non-zero padding, data after the end blocks, a bad header checksum) is a
 * change, and a changed bundle must never verify.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "err.h"
#include "evidence_archive.h"
#include "util.h"

#define BLOCK        512
#define SHA256_LEN   32
#define MANIFEST_HDR "kasir-evidence 1\n"

static bool
name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > EV_NAME_MAX || name[0] == '/' || name[n - 1] == '/' ||
	    strstr(name, "..") != NULL || strstr(name, "//") != NULL)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		      c == '-' || c == '/'))
			return false;
	}
	return true;
}

int
ev_bundle_add(struct ev_bundle *b, const char *name, const void *data,
              size_t len)
{
	struct ev_file *f;

	if (!name_ok(name) || strcmp(name, EV_MANIFEST_NAME) == 0 ||
	    strcmp(name, EV_SIG_NAME) == 0)
		return -EINVAL;
	for (size_t i = 0; i < b->count; i++)
		if (strcmp(b->files[i].name, name) == 0)
			return -EINVAL;
	if (b->count >= EV_FILES_MAX || len > EV_TOTAL_MAX ||
	    b->total + len > EV_TOTAL_MAX)
		return KASIR_ETOOBIG;
	if (b->count == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 32;
		struct ev_file *v = realloc(b->files, cap * sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		b->files = v;
		b->cap = cap;
	}
	f = &b->files[b->count];
	memset(f, 0, sizeof(*f));
	if ((f->data = malloc(len ? len : 1)) == NULL)
		return -ENOMEM;
	if (len)
		memcpy(f->data, data, len);
	f->len = len;
	kasir_strlcpy(f->name, name, sizeof(f->name));
	b->count++;
	b->total += len;
	return 0;
}

void
ev_bundle_free(struct ev_bundle *b)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->count; i++)
		free(b->files[i].data);
	free(b->files);
	memset(b, 0, sizeof(*b));
}

static int
sha256_hex(const uint8_t *data, size_t len, char out[2 * SHA256_LEN + 1])
{
	uint8_t md[SHA256_LEN];
	unsigned int mdlen = 0;

	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != SHA256_LEN)
		return -EIO;
	hex_encode(md, SHA256_LEN, out);
	return 0;
}

/* The signature: HMAC-SHA256 under key of "<key id>\n" followed by the
 * manifest, so that the key id written beside it is covered too. */
static int
manifest_mac(const uint8_t *key, size_t key_len, const char *key_id,
             const uint8_t *manifest, size_t len, uint8_t out[SHA256_LEN])
{
	size_t idl = strlen(key_id);
	unsigned int n = 0;
	uint8_t *buf;
	int r = 0;

	if (key_len == 0 || key_len > 4096)
		return -EINVAL;
	if ((buf = malloc(idl + 1 + len)) == NULL)
		return -ENOMEM;
	memcpy(buf, key_id, idl);
	buf[idl] = '\n';
	memcpy(buf + idl + 1, manifest, len);
	if (HMAC(EVP_sha256(), key, (int)key_len, buf, idl + 1 + len, out,
	         &n) == NULL ||
	    n != SHA256_LEN)
		r = -EIO;
	free(buf);
	return r;
}

/* ---- the manifest ---------------------------------------------------------
 */

/* Builds the manifest text (caller frees *ret). */
static int
manifest_build(const struct ev_bundle *b, char **ret, size_t *ret_len)
{
	size_t cap =
	    sizeof(MANIFEST_HDR) + b->count * (64 + 24 + EV_NAME_MAX + 4);
	char *m = malloc(cap), hex[2 * SHA256_LEN + 1];
	size_t off;
	int r;

	if (m == NULL)
		return -ENOMEM;
	off = (size_t)snprintf(m, cap, "%s", MANIFEST_HDR);
	for (size_t i = 0; i < b->count; i++) {
		if ((r = sha256_hex(b->files[i].data, b->files[i].len, hex)) <
		    0) {
			free(m);
			return r;
		}
		off += (size_t)snprintf(m + off, cap - off, "%s %zu %s\n", hex,
		                        b->files[i].len, b->files[i].name);
	}
	*ret = m;
	*ret_len = off;
	return 0;
}

static int
sig_build(const char *key_id, const uint8_t *key, size_t key_len,
          const char *manifest, size_t manifest_len, char *out, size_t out_len)
{
	uint8_t mac[SHA256_LEN];
	char hex[2 * SHA256_LEN + 1];
	int r;

	if ((r = manifest_mac(key, key_len, key_id, (const uint8_t *)manifest,
	                      manifest_len, mac)) < 0)
		return r;
	hex_encode(mac, SHA256_LEN, hex);
	snprintf(out, out_len, "hmac-sha256 %s %s\n", key_id, hex);
	return 0;
}

/* ---- ustar writing ------------------------------------------------------- */

static void
octal(char *field, size_t width, uint64_t v)
{
	/* width-1 digits, zero-padded, then NUL */
	snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v);
}

static void
header(uint8_t h[BLOCK], const char *name, size_t size, time_t mtime)
{
	unsigned sum = 0;

	memset(h, 0, BLOCK);
	memcpy(h, name, strlen(name));               /* name[100] */
	octal((char *)h + 100, 8, 0444);             /* mode */
	octal((char *)h + 108, 8, 0);                /* uid */
	octal((char *)h + 116, 8, 0);                /* gid */
	octal((char *)h + 124, 12, size);            /* size */
	octal((char *)h + 136, 12, (uint64_t)mtime); /* mtime */
	memset(h + 148, ' ', 8);                     /* chksum, while summing */
	h[156] = '0';                                /* typeflag: regular */
	memcpy(h + 257, "ustar", 6);                 /* magic "ustar\0" */
	memcpy(h + 263, "00", 2);                    /* version */
	memcpy(h + 265, "kasir", 5);                 /* uname */
	memcpy(h + 297, "kasir", 5);                 /* gname */
	for (int i = 0; i < BLOCK; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
}

static int
write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n > 0) {
		ssize_t w = write(fd, b, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

static int
write_member(int fd, const char *name, const void *data, size_t len,
             time_t mtime)
{
	static const uint8_t zeros[BLOCK];
	uint8_t h[BLOCK];
	int r;

	header(h, name, len, mtime);
	if ((r = write_all(fd, h, BLOCK)) < 0 ||
	    (r = write_all(fd, data, len)) < 0)
		return r;
	if (len % BLOCK)
		return write_all(fd, zeros, BLOCK - len % BLOCK);
	return 0;
}

int
ev_bundle_write(const struct ev_bundle *b, const char *key_id,
                const uint8_t *key, size_t key_len, const char *path)
{
	static const uint8_t zeros[2 * BLOCK];
	char *manifest = NULL, sig[EV_KEY_ID_MAX + 100];
	size_t mlen = 0;
	time_t now = time(NULL);
	int fd, r;

	if (key_id == NULL || strlen(key_id) == 0 ||
	    strlen(key_id) > EV_KEY_ID_MAX || strchr(key_id, ' ') ||
	    strchr(key_id, '\n'))
		return -EINVAL;
	if ((r = manifest_build(b, &manifest, &mlen)) < 0)
		return r;
	if ((r = sig_build(key_id, key, key_len, manifest, mlen, sig,
	                   sizeof(sig))) < 0)
		goto out;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = write_member(fd, EV_MANIFEST_NAME, manifest, mlen, now);
	if (r == 0)
		r = write_member(fd, EV_SIG_NAME, sig, strlen(sig), now);
	for (size_t i = 0; r == 0 && i < b->count; i++)
		r = write_member(fd, b->files[i].name, b->files[i].data,
		                 b->files[i].len, now);
	if (r == 0)
		r = write_all(fd, zeros, sizeof(zeros));
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r < 0)
		unlink(path);
out:
	free(manifest);
	return r;
}

/* ---- verification -------------------------------------------------------- */

struct member {
	char name[EV_NAME_MAX + 1];
	const uint8_t *data;
	size_t len;
	bool listed;
};

static int reject(char *why, size_t why_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
reject(char *why, size_t why_len, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	return code;
}

static bool
all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* Parses an octal field of width bytes (digits, then NUL or spaces). */
static int
parse_octal(const uint8_t *f, size_t width, uint64_t *ret)
{
	uint64_t v = 0;
	size_t i = 0;

	while (i < width && f[i] == ' ')
		i++;
	if (i == width || f[i] < '0' || f[i] > '7')
		return -EINVAL;
	for (; i < width && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v > (UINT64_MAX >> 3))
			return -ERANGE;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < width; i++)
		if (f[i] != 0 && f[i] != ' ')
			return -EINVAL;
	*ret = v;
	return 0;
}

/* Splits buf into members; *ret (caller frees) holds them. */
static int
parse_tar(const uint8_t *buf, size_t len, struct member **ret, size_t *ret_n,
          char *why, size_t why_len)
{
	struct member *m = NULL;
	size_t n = 0, off = 0;
	int r = 0;

	if (len % BLOCK != 0)
		return reject(why, why_len, KASIR_EREJECT,
		              "archive is %zu bytes: not a whole number of "
		              "512-byte blocks",
		              len);
	if ((m = calloc(EV_FILES_MAX + 2, sizeof(*m))) == NULL)
		return -ENOMEM;
	for (;;) {
		const uint8_t *h = buf + off;
		uint64_t size, sum;
		unsigned calc = 0;

		if (off + BLOCK > len) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "archive ends without its two zero blocks");
			goto fail;
		}
		if (all_zero(h, BLOCK)) {
			/* two or more zero blocks (tar(1) pads to its record
			 * size), nothing else */
			if (off + 2 * BLOCK > len ||
			    !all_zero(h + BLOCK, len - off - BLOCK)) {
				r = reject(why, why_len, KASIR_EREJECT,
				           "data after the end of the archive "
				           "(offset %zu)",
				           off);
				goto fail;
			}
			break;
		}
		if (n >= EV_FILES_MAX + 2) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "more than %d members", EV_FILES_MAX + 2);
			goto fail;
		}
		for (int i = 0; i < BLOCK; i++)
			calc += (i >= 148 && i < 156) ? ' ' : h[i];
		if (parse_octal(h + 148, 8, &sum) < 0 || sum != calc ||
		    memcmp(h + 257, "ustar", 6) != 0 || h[156] != '0' ||
		    h[99] != 0 || h[345] != 0 ||
		    parse_octal(h + 124, 12, &size) < 0) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "member header at offset %zu is damaged or "
			           "not a plain file",
			           off);
			goto fail;
		}
		off += BLOCK;
		if (size > len - off) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "member at offset %zu runs past the end",
			           off - BLOCK);
			goto fail;
		}
		memcpy(m[n].name, h, 100);
		m[n].name[EV_NAME_MAX] = '\0';
		m[n].data = buf + off;
		m[n].len = (size_t)size;
		for (size_t i = 0; i < n; i++)
			if (strcmp(m[i].name, m[n].name) == 0) {
				r = reject(why, why_len, KASIR_EREJECT,
				           "%s: present twice", m[n].name);
				goto fail;
			}
		off += (size_t)size;
		if (size % BLOCK) {
			size_t pad = BLOCK - size % BLOCK;

			if (pad > len - off || !all_zero(buf + off, pad)) {
				r = reject(why, why_len, KASIR_EREJECT,
				           "%s: padding changed", m[n].name);
				goto fail;
			}
			off += pad;
		}
		n++;
	}
	*ret = m;
	*ret_n = n;
	return 0;
fail:
	free(m);
	return r;
}

static struct member *
find(struct member *m, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(m[i].name, name) == 0)
			return &m[i];
	return NULL;
}

/* Checks MANIFEST.sig against the manifest's bytes. */
static int
check_sig(const struct member *man, const struct member *sig,
          const uint8_t *key, size_t key_len, char *why, size_t why_len)
{
	char line[EV_KEY_ID_MAX + 100], id[EV_KEY_ID_MAX + 1], hex[65];
	uint8_t want[SHA256_LEN], got[SHA256_LEN];
	size_t glen = 0;
	int r;

	if (sig->len == 0 || sig->len >= sizeof(line))
		return reject(why, why_len, KASIR_ESIG,
		              "%s: not a signature line", EV_SIG_NAME);
	memcpy(line, sig->data, sig->len);
	line[sig->len] = '\0';
	if (sscanf(line, "hmac-sha256 %32s %64s", id, hex) != 2 ||
	    strlen(hex) != 64 ||
	    hex_decode(hex, 64, got, sizeof(got), &glen) < 0 ||
	    glen != SHA256_LEN)
		return reject(why, why_len, KASIR_ESIG,
		              "%s: not a signature line", EV_SIG_NAME);
	{
		/* the line must be exactly what the writer produced */
		char again[sizeof(line)];

		snprintf(again, sizeof(again), "hmac-sha256 %s %s\n", id, hex);
		if (strcmp(again, line) != 0)
			return reject(why, why_len, KASIR_ESIG,
			              "%s: not a signature line", EV_SIG_NAME);
	}
	if ((r = manifest_mac(key, key_len, id, man->data, man->len, want)) < 0)
		return r;
	if (!ct_equal(want, sizeof(want), got, sizeof(got)))
		return reject(why, why_len, KASIR_ESIG,
		              "the manifest's signature does not verify under "
		              "this key (key id in the bundle: %s): the "
		              "manifest was changed or another key signed it",
		              id);
	return 0;
}

int
ev_verify_buf(const uint8_t *buf, size_t len, const uint8_t *key,
              size_t key_len, size_t *ret_files, char *why, size_t why_len)
{
	struct member *m = NULL, *man, *sig;
	size_t n = 0, listed = 0, off;
	char *text = NULL;
	int r;

	if ((r = parse_tar(buf, len, &m, &n, why, why_len)) < 0)
		return r;
	man = find(m, n, EV_MANIFEST_NAME);
	sig = find(m, n, EV_SIG_NAME);
	if (man == NULL || sig == NULL) {
		r = reject(why, why_len, KASIR_EREJECT, "%s missing",
		           man == NULL ? EV_MANIFEST_NAME : EV_SIG_NAME);
		goto out;
	}
	man->listed = sig->listed = true;
	if ((r = check_sig(man, sig, key, key_len, why, why_len)) < 0)
		goto out;
	if ((text = malloc(man->len + 1)) == NULL) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(text, man->data, man->len);
	text[man->len] = '\0';
	if (strlen(text) != man->len ||
	    strncmp(text, MANIFEST_HDR, strlen(MANIFEST_HDR)) != 0) {
		r = reject(why, why_len, KASIR_EREJECT,
		           "%s: not a kasir evidence manifest",
		           EV_MANIFEST_NAME);
		goto out;
	}
	off = strlen(MANIFEST_HDR);
	while (off < man->len) {
		char *line = text + off, *nl = strchr(line, '\n'), hex[65],
		     name[EV_NAME_MAX + 2], got[65];
		unsigned long long size;
		struct member *f;
		int used = 0;

		if (nl == NULL) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "%s: last line unterminated",
			           EV_MANIFEST_NAME);
			goto out;
		}
		*nl = '\0';
		if (sscanf(line, "%64s %llu %100s%n", hex, &size, name,
		           &used) != 3 ||
		    (size_t)used != strlen(line)) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "%s: bad line: %.120s", EV_MANIFEST_NAME,
			           line);
			goto out;
		}
		off = (size_t)(nl - text) + 1;
		f = find(m, n, name);
		if (f == NULL || f == man || f == sig) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "%s: listed in the manifest but missing",
			           name);
			goto out;
		}
		if (f->listed) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "%s: listed twice", name);
			goto out;
		}
		f->listed = true;
		listed++;
		if (f->len != size) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "%s: %zu bytes, the manifest says %llu",
			           name, f->len, size);
			goto out;
		}
		if ((r = sha256_hex(f->data, f->len, got)) < 0)
			goto out;
		if (strcmp(got, hex) != 0) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "%s: SHA-256 differs from the manifest: "
			           "the file was changed",
			           name);
			goto out;
		}
	}
	for (size_t i = 0; i < n; i++)
		if (!m[i].listed) {
			r = reject(why, why_len, KASIR_EREJECT,
			           "%s: in the archive but not in the manifest "
			           "(added)",
			           m[i].name);
			goto out;
		}
	if (ret_files != NULL)
		*ret_files = listed;
	r = 0;
out:
	free(text);
	free(m);
	return r;
}

int
ev_verify_file(const char *path, const uint8_t *key, size_t key_len,
               size_t *ret_files, char *why, size_t why_len)
{
	struct stat st;
	uint8_t *buf;
	size_t got = 0;
	int fd, r;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return reject(why, why_len, -errno, "%s: %s", path,
		              strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > EV_ARCHIVE_MAX) {
		close(fd);
		return reject(why, why_len, KASIR_ETOOBIG,
		              "%s: not a regular file of at most %u bytes",
		              path, (unsigned)EV_ARCHIVE_MAX);
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		free(buf);
		return reject(why, why_len, -EIO, "%s: short read", path);
	}
	r = ev_verify_buf(buf, got, key, key_len, ret_files, why, why_len);
	free(buf);
	return r;
}
