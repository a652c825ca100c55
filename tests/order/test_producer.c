/*
 * test_producer.c - a stand-in for kasir-ingest (stream "ingest") or
 * kasir-reconciler (stream "recon") for kasir-order's integration tests:
 * the real backbone producer (stream.h) over a schema of its own.
 *
 *   order-test-producer SCHEMA DSN STREAM push|pub PUBLISH_URL REPLAY_URL
 * KEY_FILE
 *
 * Reads lines "TYPE JSON-DATA" on stdin (e.g. payment.notification); each is
 * appended and committed in its own transaction and answered "ok SEQ" once
 * the sequencer gave it its seq (or "err MESSAGE") on stdout.  The replay
 * socket serves everything appended until stdin closes.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "db.h"
#include "envelope.h"
#include "err.h"
#include "log.h"
#include "message.h"
#include "stream.h"
#include "test_stream.h"

#define LINE_MAX_BYTES (256 * 1024)

int
main(int argc, char **argv)
{
	struct stream_producer_conf pc = {0};
	struct db_conf dc = {0};
	struct stream_producer *p = NULL;
	struct kasir_db *db = NULL;
	struct keyring *kr = NULL;
	char why[512], *line = NULL, key[256];
	char emptydir[] = "/tmp/kasir-prod-XXXXXX";
	size_t klen;
	FILE *kf;
	int rc = 1;

	test_crash_report_install();
	if (argc != 8) {
		fprintf(stderr,
		        "usage: %s SCHEMA DSN STREAM push|pub PUBLISH REPLAY "
		        "KEYFILE\n",
		        argv[0]);
		return 2;
	}
	const char *stream = argv[3];
	bool fanout = strcmp(argv[4], "pub") == 0;
	log_open("order-test-producer", LOG_NOTICE);
	kf = fopen(argv[7], "r");
	if (kf == NULL) {
		perror(argv[7]);
		return 1;
	}
	klen = fread(key, 1, sizeof(key), kf);
	fclose(kf);
	while (klen > 0 && (key[klen - 1] == '\n' || key[klen - 1] == '\r'))
		klen--;
	if (keyring_new(&kr) < 0 ||
	    keyring_add(kr, "k1", (const uint8_t *)key, klen) < 0 ||
	    keyring_set_signer(kr, "k1") < 0) {
		fprintf(stderr, "bad key\n");
		goto out;
	}
	dc.url = argv[2];
	dc.application_name = "order-test-producer";
	if (mkdtemp(emptydir) == NULL) {
		perror("mkdtemp");
		goto out;
	}
	if (db_migrate(&dc, argv[1], "postgres", stream_migrations,
	               STREAM_MIGRATIONS, emptydir, why, sizeof(why)) < 0) {
		fprintf(stderr, "migrate: %s\n", why);
		goto out;
	}
	rmdir(emptydir);
	if (db_open(&dc, &db) < 0)
		goto out;
	pc.stream = stream;
	pc.schema = argv[1];
	pc.publish_url = argv[5];
	pc.replay_url = argv[6];
	pc.fanout = fanout;
	pc.heartbeat_ms = 200;
	pc.db = dc;
	if (stream_producer_start(&pc, kr, NULL, &p) < 0) {
		fprintf(stderr, "producer start failed\n");
		goto out;
	}
	line = malloc(LINE_MAX_BYTES);
	printf("ready\n");
	fflush(stdout);
	while (line && fgets(line, LINE_MAX_BYTES, stdin) != NULL) {
		char *sp = strchr(line, ' ');
		enum msg_type t;
		cJSON *data;
		int64_t seq = 0;
		int r;

		if (sp == NULL) {
			printf("err no data\n");
			fflush(stdout);
			continue;
		}
		*sp = '\0';
		t = msg_type_from_name(line);
		data = cJSON_Parse(sp + 1);
		if (t == MSG_UNKNOWN || data == NULL) {
			printf("err bad type or json\n");
			fflush(stdout);
			cJSON_Delete(data);
			continue;
		}
		if (db_ensure(db) < 0 || (r = db_begin(db)) < 0) {
			printf("err db\n");
		} else if ((r = stream_append(p, db, t, data, NULL)) < 0) {
			db_rollback(db);
			printf("err append %s %s\n", kasir_strerror(r),
			       db_last_error(db));
		} else if ((r = db_commit(db)) < 0) {
			printf("err commit %s\n", kasir_strerror(r));
		} else {
			stream_producer_kick(p);
			r = test_wait_sequenced(db, argv[1], stream, &seq);
			if (r < 0)
				printf("err sequencing %s\n",
				       kasir_strerror(r));
			else
				printf("ok %lld\n", (long long)seq);
		}
		fflush(stdout);
		cJSON_Delete(data);
	}
	rc = 0;
out:
	free(line);
	stream_producer_stop(p);
	db_close(db);
	keyring_free(kr);
	return rc;
}
