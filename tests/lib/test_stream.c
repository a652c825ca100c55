/*
 * test_stream.c - what the stand-in producers of the integration tests
 * share (tests/order, tests/notifier): waiting for the backbone's
 * sequencer to give a just-committed message its seq, and a report of
 * where a crash happened.
 */
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"
#include "test_stream.h"

/*
 * The seq of the message just committed: this program is the only writer
 * of its stream, so once the sequencer has numbered every committed
 * append (stream_pending empty, nothing new in stream_log) the message is
 * the head.  0, or -ETIMEDOUT after 10 s.
 */
int
test_wait_sequenced(struct kasir_db *db, const char *schema, const char *stream,
                    int64_t *ret_seq)
{
	char sql[1024];
	struct db_stmt st = {
	    .name = "test_wait_sequenced", .sql = sql, .nparams = 1};
	const char *params[] = {stream};

	snprintf(sql, sizeof(sql),
	         "SELECT (SELECT count(*) FROM %s.stream_pending WHERE "
	         "stream = $1) + (SELECT count(*) FROM %s.stream_log_ids($1, "
	         "(SELECT snap FROM %s.stream_head WHERE stream = $1), "
	         "pg_current_snapshot())), (SELECT seq FROM %s.stream_head "
	         "WHERE stream = $1)",
	         schema, schema, schema, schema);
	for (int i = 0; i < 5000; i++) {
		PGresult *res = NULL;
		bool done = false;

		if (db_exec(db, &st, params, &res) == 0) {
			done = db_get_i64(res, 0, 0) == 0;
			if (done)
				*ret_seq = db_get_i64(res, 0, 1);
			PQclear(res);
		}
		if (done)
			return 0;
		usleep(2000);
	}
	return -ETIMEDOUT;
}

#if !defined(__SANITIZE_ADDRESS__)
/* write(2) to stderr, ignoring the result: nothing else can be done in a
 * signal handler. */
static void
crash_write(const char *buf, size_t len)
{
	ssize_t r = write(2, buf, len);

	(void)r;
}

static void
crash_puts(const char *str)
{
	crash_write(str, strlen(str));
}

static void
crash_hex(const char *label, uintptr_t v)
{
	char buf[2 + 16 + 1];

	buf[0] = '0';
	buf[1] = 'x';
	for (int i = 0; i < 16; i++)
		buf[2 + i] = "0123456789abcdef"[(v >> (60 - 4 * i)) & 0xf];
	buf[18] = '\0';
	crash_puts(label);
	crash_puts(buf);
	crash_puts("\n");
}

static void
crash_handler(int sig, siginfo_t *si, void *ctx)
{
	void *frames[64];
	char buf[4096];
	int fd, n;

	crash_puts("crash report: signal ");
	crash_puts(sig == SIGSEGV  ? "SIGSEGV\n"
	           : sig == SIGBUS ? "SIGBUS\n"
	           : sig == SIGILL ? "SIGILL\n"
	                           : "SIGFPE\n");
	crash_hex("fault address ", (uintptr_t)si->si_addr);
#if defined(__x86_64__)
	{
		const ucontext_t *uc = ctx;
		const uintptr_t *sp =
		    (const uintptr_t *)uc->uc_mcontext.gregs[REG_RSP];

		crash_hex("rip ", (uintptr_t)uc->uc_mcontext.gregs[REG_RIP]);
		crash_hex("rsp ", (uintptr_t)sp);
		for (int i = 0; i < 8; i++)
			crash_hex("  [rsp] ", sp[i]);
	}
#else
	(void)ctx;
#endif
	n = backtrace(frames, 64);
	crash_puts("backtrace:\n");
	backtrace_symbols_fd(frames, n, 2);
	crash_puts("maps:\n");
	fd = open("/proc/self/maps", O_RDONLY);
	while (fd >= 0 && (n = (int)read(fd, buf, sizeof(buf))) > 0)
		crash_write(buf, (size_t)n);
	if (fd >= 0)
		close(fd);
	/* SA_RESETHAND: the default action now, as if never caught */
	raise(sig);
}

void
test_crash_report_install(void)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
	struct sigaction sa;
	void *warm[1];

	/* the first backtrace() loads libgcc: not in the handler */
	(void)backtrace(warm, 1);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = crash_handler;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}
#else
/* AddressSanitizer reports a SEGV itself, with symbols */
void
test_crash_report_install(void)
{
}
#endif
