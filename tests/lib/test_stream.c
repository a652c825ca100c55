/*
 * test_stream.c - what the stand-in producers of the integration tests
 * share (tests/order, tests/notifier): waiting for the backbone's
 * sequencer to give a just-committed message its seq.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "db.h"
#include "test_stream.h"

/*
 * The seq of the message just committed: this program is the only writer
 * of its stream, so once the sequencer has emptied stream_pending the
 * message is the head.  0, or -ETIMEDOUT after 10 s.
 */
int
test_wait_sequenced(struct kasir_db *db, const char *schema, const char *stream,
                    int64_t *ret_seq)
{
	char sql[512];
	struct db_stmt st = {
	    .name = "test_wait_sequenced", .sql = sql, .nparams = 1};
	const char *params[] = {stream};

	snprintf(sql, sizeof(sql),
	         "SELECT (SELECT count(*) FROM %s.stream_pending WHERE "
	         "stream = $1), (SELECT seq FROM %s.stream_head WHERE "
	         "stream = $1)",
	         schema, schema);
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
