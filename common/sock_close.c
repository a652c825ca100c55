/*
 * sock_close.c - nng_close() with a bounded wait, for teardown.
 *
 * libnng 1.5.2 (Debian 12) has a shutdown bug in its stream transports
 * (tcp and ipc alike): closing a socket while one of its pipes is between
 * reading a message's header and its body makes the transport drop the
 * body read (nni_aio_begin() fails on the closed receive aio and nothing
 * completes it), so the pipe's protocol receive never ends and
 * nng_close() waits for that pipe forever -- and so does every later
 * close and nng_fini(): nng reaps pipes on one thread.  Data arriving at
 * the wrong instant is enough; nothing on our side can prevent it.
 *
 * So the close runs on a helper thread, joined for at most
 * SOCK_CLOSE_WAIT_MS; then the caller logs a warning and goes on, and
 * later closes are not waited for (the process is exiting: the helpers
 * stay blocked until exit, and daemon_fini() ends the process without
 * nng_fini()).  The caller has joined every thread that used the socket.
 */
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "failpoint.h"
#include "log.h"
#include "sock_close.h"
#include "util.h"

#define SOCK_CLOSE_WAIT_MS 1000

/* Set once a close did not finish (see above). */
static bool close_wedged;

bool
sock_close_left_wedged(void)
{
	return __atomic_load_n(&close_wedged, __ATOMIC_ACQUIRE);
}

/* Failpoint "nng.close_reap" (tests/shutdown): the first pipe a close
 * removes stops nng's reaper thread in its removal callback, as the bug
 * above does for real, so that a test can make a close never finish on
 * demand.  Registered only when failpoints are on. */
static void
close_reap_failpoint(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	(void)pipe;
	(void)ev;
	(void)arg;
	(void)failpoint_hit("nng.close_reap");
}

static void *
closer_main(void *arg)
{
	nng_socket s = {.id = (uint32_t)(uintptr_t)arg};

	nng_close(s);
	return NULL;
}

void
sock_close_bounded(nng_socket s, const char *stream, const char *what)
{
	struct timespec until;
	pthread_t t;
	int rc;

	if (failpoint_enabled())
		(void)nng_pipe_notify(s, NNG_PIPE_EV_REM_POST,
		                      close_reap_failpoint, NULL);
	if (pthread_create(&t, NULL, closer_main, (void *)(uintptr_t)s.id) !=
	    0) {
		nng_close(s); /* unbounded, but closed */
		return;
	}
	if (sock_close_left_wedged()) {
		pthread_detach(t);
		return;
	}
	deadline_after_ms(CLOCK_MONOTONIC, SOCK_CLOSE_WAIT_MS, &until);
	rc = pthread_clockjoin_np(t, NULL, CLOCK_MONOTONIC, &until);
	if (rc == 0)
		return;
	pthread_detach(t);
	__atomic_store_n(&close_wedged, true, __ATOMIC_RELEASE);
	log_fields(LOG_WARNING,
	           stream != NULL ? LOG_F({"STREAM", stream}) : NULL,
	           "closing the %s socket did not finish (libnng 1.5.2 close "
	           "bug): left to process exit",
	           what);
}
