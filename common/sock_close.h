/*
 * sock_close.h - closing an nng socket at teardown without hanging on
 * libnng 1.5.2's close bug (sock_close.c says what it is).
 *
 * Every socket a daemon holds for its whole life (the backbone's
 * producer and consumer sockets, the admin socket) is closed with
 * sock_close_bounded() once every thread that used it is joined.
 * daemon_fini() asks sock_close_left_wedged() before nng_fini(), which
 * would wait forever for a close that never finished.
 */
#ifndef KASIR_SOCK_CLOSE_H
#define KASIR_SOCK_CLOSE_H

#include <stdbool.h>

#include <nng/nng.h>

/* nng_close(s), waited for at most a second: then a warning naming what
 * (and stream, which may be NULL) is logged and the close is left to
 * process exit; later closes are not waited for at all. */
void sock_close_bounded(nng_socket s, const char *stream, const char *what);
/* True once a close was left unfinished: nng's reaper thread is stuck. */
bool sock_close_left_wedged(void);

#endif
