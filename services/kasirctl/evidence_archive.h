/*
 * evidence_archive.h - the evidence bundle as bytes: a plain ustar archive
 * whose MANIFEST lists every other file with its size and SHA-256, and
 * whose MANIFEST.sig is an HMAC-SHA256 of the MANIFEST under the evidence
 * key.  No database, no daemons: kasirctl's evidence.c fills a bundle,
 * this file writes it and verifies it (docs/kasirctl.md, "evidence").
 *
 * Layout of an archive (every member a regular file, in this order):
 *   MANIFEST       "kasir-evidence 1\n" then per file
 *                  "<sha256 hex> <size> <name>\n", sorted as added
 *   MANIFEST.sig   "hmac-sha256 <key id> <hex>\n", the HMAC-SHA256 under
 *                  the evidence key of "<key id>\n" then the MANIFEST
 *   <the files>
 */
#ifndef KASIR_EVIDENCE_ARCHIVE_H
#define KASIR_EVIDENCE_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#define EV_NAME_MAX      99                  /* ustar name field, no prefix */
#define EV_FILES_MAX     4096                /* members of one bundle */
#define EV_TOTAL_MAX     (64u * 1024 * 1024) /* bytes of file data */
#define EV_ARCHIVE_MAX   (EV_TOTAL_MAX + 8u * 1024 * 1024)
#define EV_MANIFEST_NAME "MANIFEST"
#define EV_SIG_NAME      "MANIFEST.sig"
#define EV_KEY_ID_MAX    32

struct ev_file {
	char name[EV_NAME_MAX + 1];
	uint8_t *data; /* owned */
	size_t len;
};

struct ev_bundle {
	struct ev_file *files; /* owned */
	size_t count;
	size_t cap;
	size_t total; /* bytes of data */
};

/* Adds a copy of data as name ([A-Za-z0-9._/-], no "..", not the manifest
 * names).  0, -EINVAL (bad or duplicate name), KASIR_ETOOBIG (a bound),
 * -ENOMEM. */
int ev_bundle_add(struct ev_bundle *b, const char *name, const void *data,
                  size_t len);
void ev_bundle_free(struct ev_bundle *b);

/* Writes the archive to path (created, never overwritten: -EEXIST), with
 * the manifest signed under key (key_id names it in MANIFEST.sig).  On
 * failure nothing is left at path. */
int ev_bundle_write(const struct ev_bundle *b, const char *key_id,
                    const uint8_t *key, size_t key_len, const char *path);

/* Checks an archive in memory: a well-formed ustar archive of regular files,
 * a MANIFEST whose signature verifies under key, every listed file present
 * once with its size and SHA-256, nothing else.  0, or KASIR_EREJECT /
 * KASIR_ESIG with why filled ("report.md: sha-256 differs").  On success
 * *ret_files (may be NULL) gets the number of files listed. */
int ev_verify_buf(const uint8_t *buf, size_t len, const uint8_t *key,
                  size_t key_len, size_t *ret_files, char *why, size_t why_len);
/* Reads path (bounded by EV_ARCHIVE_MAX) and calls ev_verify_buf. */
int ev_verify_file(const char *path, const uint8_t *key, size_t key_len,
                   size_t *ret_files, char *why, size_t why_len);

#endif
