/*
 * kasir-stream-sink - a stream consumer that takes the live frames of a
 * publish socket and drops them.
 *
 * bench/a-ingest dials it to kasir-ingest's publish socket, so that the
 * publisher reads, renders, signs and sends every message as it does for
 * kasir-order in production (a publisher with no consumer reads nothing),
 * without kasir-order's own work on the same cores.  It checks nothing:
 * kasir-order verifies the envelopes; this only counts them.
 *
 *   kasir-stream-sink --url tcp://127.0.0.1:PORT [--sub]
 *
 * --sub: the stream is pub/sub (the default is push/pull, as the ingest
 * stream).  Runs until SIGTERM or SIGINT, then prints one JSON line:
 * {"frames":N,"bytes":M}.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/sub.h>

#define SINK_RECV_TIMEOUT_MS 200 /* how soon a signal is seen */
#define SINK_MAX_FRAME       (16 * 1024 * 1024)

static volatile sig_atomic_t stopping;

static void
on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static void
usage(void)
{
	fprintf(stderr, "usage: kasir-stream-sink --url URL [--sub]\n");
}

int
main(int argc, char **argv)
{
	const char *url = NULL;
	bool sub = false;
	unsigned long long frames = 0, bytes = 0;
	struct sigaction sa;
	nng_socket s;
	int rv;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--url") == 0 && i + 1 < argc)
			url = argv[++i];
		else if (strcmp(argv[i], "--sub") == 0)
			sub = true;
		else {
			usage();
			return 2;
		}
	}
	if (url == NULL) {
		usage();
		return 2;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	rv = sub ? nng_sub0_open(&s) : nng_pull0_open(&s);
	if (rv == 0 && sub)
		rv = nng_socket_set(s, NNG_OPT_SUB_SUBSCRIBE, "", 0);
	if (rv == 0)
		rv = nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, SINK_MAX_FRAME);
	if (rv == 0)
		rv = nng_socket_set_ms(s, NNG_OPT_RECVTIMEO,
		                       SINK_RECV_TIMEOUT_MS);
	/* the publisher may start after the sink: nng redials */
	if (rv == 0)
		rv = nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK);
	if (rv != 0) {
		fprintf(stderr, "kasir-stream-sink: %s: %s\n", url,
		        nng_strerror(rv));
		return 1;
	}
	while (!stopping) {
		void *buf;
		size_t len;

		rv = nng_recv(s, &buf, &len, NNG_FLAG_ALLOC);
		if (rv == NNG_ETIMEDOUT)
			continue;
		if (rv != 0) {
			fprintf(stderr, "kasir-stream-sink: receive: %s\n",
			        nng_strerror(rv));
			break;
		}
		frames++;
		bytes += len;
		nng_free(buf, len);
	}
	nng_close(s);
	printf("{\"frames\":%llu,\"bytes\":%llu}\n", frames, bytes);
	return rv == 0 || rv == NNG_ETIMEDOUT ? 0 : 1;
}
