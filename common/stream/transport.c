/*
 * transport.c - the backbone's nng side: errors, signing and sending a
 * frame, blocking receive and send through a thread's own aio (and the
 * shutdown rule that goes with it), and a close with a bounded wait.
 */
#include <errno.h>
#include <stdlib.h>

#include "envelope.h"
#include "err.h"
#include "failpoint.h"
#include "log.h"
#include "util.h"
#include "stream_impl.h"

#define STREAM_CLOSE_WAIT_MS 1000 /* stream_close_bounded() */

int
stream_nng_err(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECLOSED:
		return -ECANCELED;
	case NNG_EAGAIN:
		return -EAGAIN;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_EADDRINVAL:
	case NNG_EINVAL:
		return -EINVAL;
	default:
		return KASIR_EPEER;
	}
}

/* Signs body into a frame and sends it on s with flags. */
int
stream_seal_and_send(const struct keyring *kr, nng_socket s, const char *body,
                     size_t body_len, int flags)
{
	char *frame = NULL;
	size_t len = 0;
	int rc;

	rc = envelope_seal(kr, body, body_len, &frame, &len);
	if (rc < 0)
		return rc;
	rc = stream_nng_err(nng_send(s, frame, len, flags));
	free(frame);
	return rc;
}

/*
 * Blocking receive / send through the calling thread's own aio, with the
 * socket's RECVTIMEO / SENDTIMEO.  Shutdown rule (libnng 1.5.2): a socket
 * is never closed while another thread has an operation pending on it.
 * nng's timer thread calls a timed-out operation's cancel function with
 * the socket's protocol state outside any lock nng_close() waits for, so
 * closing the socket under a blocked nng_recvmsg() lets that timer thread
 * lock a destroyed mutex ("panic: pthread_mutex_lock: Invalid argument",
 * SIGABRT).  The stopper therefore nng_aio_stop()s the aio (the pending
 * operation ends with NNG_ECANCELED and every later one fails at once),
 * joins the thread, nng_aio_free()s the aio (which waits for the timer
 * thread to be done with it) and only then closes the socket.  Returns an
 * nng error; on success *ret is the message (caller frees).
 */
static int
stream_aio_recvmsg_within(nng_socket s, nng_aio *aio, nng_duration timeout,
                          nng_msg **ret)
{
	int rv;

	nng_aio_set_timeout(aio, timeout);
	nng_recv_aio(s, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	if (rv == 0) {
		*ret = nng_aio_get_msg(aio);
		nng_aio_set_msg(aio, NULL);
	}
	return rv;
}

int
stream_aio_recvmsg(nng_socket s, nng_aio *aio, nng_msg **ret)
{
	return stream_aio_recvmsg_within(s, aio, NNG_DURATION_DEFAULT, ret);
}

/* Non-blocking receive through aio: a message already queued, or
 * NNG_ETIMEDOUT at once. */
int
stream_aio_recvmsg_nowait(nng_socket s, nng_aio *aio, nng_msg **ret)
{
	return stream_aio_recvmsg_within(s, aio, NNG_DURATION_ZERO, ret);
}

/* Sends msg through aio; msg is consumed whatever the outcome. */
int
stream_aio_sendmsg(nng_socket s, nng_aio *aio, nng_msg *msg)
{
	int rv;

	nng_aio_set_timeout(aio, NNG_DURATION_DEFAULT);
	nng_aio_set_msg(aio, msg);
	nng_send_aio(s, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	if (rv != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		nng_aio_set_msg(aio, NULL);
	}
	return rv;
}

/* True when an nng result means "the stopper stopped us". */
bool
stream_nng_stopped(int rv)
{
	return rv == NNG_ECANCELED || rv == NNG_ECLOSED;
}

/*
 * nng_close() with a bounded wait, for teardown.  libnng 1.5.2 (Debian
 * 1.5.2-2) has a second shutdown bug: closing a tcp socket while one of
 * its pipes is between reading a message's header and its body makes the
 * transport drop the body read (nni_aio_begin fails on the closed rxaio
 * and nothing completes it), so the pipe's protocol receive never ends
 * and nng_close() waits for that pipe forever (and so does every later
 * close: nng reaps pipes on one thread).  Data arriving at the wrong
 * instant is enough; nothing on our side can prevent it.  The close runs
 * on a helper thread; after STREAM_CLOSE_WAIT_MS this thread logs a
 * warning and goes on, and later closes are not waited for (the process
 * is exiting: the helpers stay blocked until exit).  Every thread that
 * used s has been joined before.
 */
struct stream_closer {
	nng_socket s;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool done; /* under mu */
	int refs;  /* under mu: the caller and the helper */
};

static void
closer_unref(struct stream_closer *k)
{
	bool last;

	pthread_mutex_lock(&k->mu);
	last = --k->refs == 0;
	pthread_mutex_unlock(&k->mu);
	if (last) {
		pthread_cond_destroy(&k->cv);
		pthread_mutex_destroy(&k->mu);
		free(k);
	}
}

static void *
closer_main(void *arg)
{
	struct stream_closer *k = arg;

	nng_close(k->s);
	pthread_mutex_lock(&k->mu);
	k->done = true;
	pthread_cond_broadcast(&k->cv);
	pthread_mutex_unlock(&k->mu);
	closer_unref(k);
	return NULL;
}

/* Set once a close did not finish: nng's single reaper thread is then
 * stuck, every later close would wait for it too, so they are not waited
 * for any more. */
static bool stream_close_wedged;

bool
stream_close_left_wedged(void)
{
	return __atomic_load_n(&stream_close_wedged, __ATOMIC_ACQUIRE);
}

/* Failpoint "stream.close_reap" (tests/shutdown): the first pipe a close
 * removes stops nng's reaper thread in its removal callback, as the
 * libnng bug above does for real, so that a test can make a close never
 * finish on demand.  Registered only when failpoints are on. */
static void
close_reap_failpoint(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	(void)pipe;
	(void)ev;
	(void)arg;
	(void)failpoint_hit("stream.close_reap");
}

void
stream_close_bounded(nng_socket s, const char *stream, const char *what)
{
	struct stream_closer *k = calloc(1, sizeof(*k));
	bool wedged = __atomic_load_n(&stream_close_wedged, __ATOMIC_ACQUIRE);
	int64_t until = now_mono_ms() + (wedged ? 0 : STREAM_CLOSE_WAIT_MS);
	pthread_t t;
	bool done;

	if (k == NULL || pthread_mutex_init(&k->mu, NULL) != 0) {
		free(k);
		nng_close(s); /* unbounded, but closed */
		return;
	}
	if (stream_cond_init_mono(&k->cv) < 0) {
		pthread_mutex_destroy(&k->mu);
		free(k);
		nng_close(s);
		return;
	}
	if (failpoint_enabled())
		(void)nng_pipe_notify(s, NNG_PIPE_EV_REM_POST,
		                      close_reap_failpoint, NULL);
	k->s = s;
	k->refs = 2;
	if (pthread_create(&t, NULL, closer_main, k) != 0) {
		k->refs = 1;
		nng_close(s);
		closer_unref(k);
		return;
	}
	pthread_detach(t);
	pthread_mutex_lock(&k->mu);
	while (!k->done && now_mono_ms() < until)
		stream_cond_wait_ms(&k->cv, &k->mu, until - now_mono_ms());
	done = k->done;
	pthread_mutex_unlock(&k->mu);
	closer_unref(k);
	if (!done) {
		__atomic_store_n(&stream_close_wedged, true, __ATOMIC_RELEASE);
		log_fields(LOG_WARNING, LOG_F({"STREAM", stream}),
		           "closing the %s socket did not finish (libnng "
		           "1.5.2 tcp close bug): left to process exit",
		           what);
	}
}

/* An nng message holding a copy of frame, for an nng send: after a failed
 * send the caller frees it, after a successful one nng owns it.  libnng
 * 1.5.2 can lose a message it owns when its socket closes while the
 * message is still queued (fixed upstream after 1.5.2, nanomsg/nng pull
 * request #1643); tests/lsan.supp names this function, and nothing else
 * is allocated in it.  Never inlined, so that the name is in the stack. */
static __attribute__((noinline)) int
stream_msg_for_nng(const char *frame, size_t len, nng_msg **ret)
{
	nng_msg *msg = NULL;
	int rv;

	rv = nng_msg_alloc(&msg, 0);
	if (rv == 0)
		rv = nng_msg_append(msg, frame, len);
	if (rv != 0) {
		nng_msg_free(msg);
		return rv;
	}
	*ret = msg;
	return 0;
}

/* stream_seal_and_send() through aio (blocking, the socket's SENDTIMEO); a stop
 * (NNG_ECANCELED) is -ECANCELED like a closed socket. */
int
stream_seal_and_send_aio(const struct keyring *kr, nng_socket s, nng_aio *aio,
                         const char *body, size_t body_len)
{
	char *frame = NULL;
	size_t len = 0;
	nng_msg *msg = NULL;
	int rc, rv;

	rc = envelope_seal(kr, body, body_len, &frame, &len);
	if (rc < 0)
		return rc;
	rv = stream_msg_for_nng(frame, len, &msg);
	free(frame);
	if (rv != 0)
		return stream_nng_err(rv);
	rv = stream_aio_sendmsg(s, aio, msg);
	return stream_nng_stopped(rv) ? -ECANCELED : stream_nng_err(rv);
}
