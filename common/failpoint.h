/*
 * failpoint.h - named places where a test can make a fault happen.
 *
 * A failpoint is a name ("reconciler.scheduler:ROLLBACK": the loop that
 * owns a database handle, then the statement it is about to send) checked
 * just before an operation that can meet a fault.  Names follow loops and
 * statements, not source lines, so refactoring keeps them.  The database
 * layer hits one before every command it sends (db.c); nothing else needs
 * to call failpoint_hit() to be covered.
 *
 * Off unless the environment says otherwise (one branch per hit):
 *
 *   KASIR_FAILPOINTS="SPEC[,SPEC...]"   SPEC = PATTERN=ACTION[@N]
 *       PATTERN  a name, or a prefix ending in '*' ("*" = every name)
 *       ACTION   break  the caller breaks its connection there
 *                pause  wait there until the test lets go (below)
 *       @N       fire on the Nth hit of each matching name (default 1);
 *                every name fires at most once
 *   KASIR_FAILPOINT_DIR=DIR
 *       the first hit of each name appends "hit NAME" and each firing
 *       "fired NAME" to DIR/failpoints.<pid>; a pause creates
 *       DIR/pause.<NAME with '/' and ':' as '_'> and waits until the file
 *       is removed (at most 300 s)
 *
 * The shipped build carries them (fault tests run on it): the systemd
 * units and the dev stack never set KASIR_FAILPOINTS.
 */
#ifndef KASIR_FAILPOINT_H
#define KASIR_FAILPOINT_H

#include <stdbool.h>

#define FAILPOINT_NAME_MAX 96

enum failpoint_action {
	FAILPOINT_NONE,  /* not armed, or not this hit */
	FAILPOINT_BREAK, /* the caller makes the operation meet a dead peer */
	FAILPOINT_PAUSE, /* waited for the test; the caller just goes on */
};

/* True when KASIR_FAILPOINTS is set (read once). */
bool failpoint_enabled(void);
/* Counts a hit of name and says what to do now.  Thread-safe. */
enum failpoint_action failpoint_hit(const char *name);

#endif
