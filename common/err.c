/*
 * err.c - text for kasir's error codes (err.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

const char *
kasir_strerror(int err)
{
	static _Thread_local char buf[128];

	switch (err) {
	case 0:
		return "success";
	case KASIR_EDB:
		return "database unavailable";
	case KASIR_EDBUNKNOWN:
		return "database connection lost during commit, outcome "
		       "unknown";
	case KASIR_ESQL:
		return "database statement failed";
	case KASIR_ESIG:
		return "signature does not verify";
	case KASIR_EPROTO:
		return "malformed frame or message";
	case KASIR_ETYPE:
		return "unknown message type";
	case KASIR_EKEY:
		return "unknown key id";
	case KASIR_ETOOBIG:
		return "input exceeds its bound";
	case KASIR_ECONFIG:
		return "configuration rejected";
	case KASIR_EREJECT:
		return "input rejected permanently";
	case KASIR_ENOTFOUND:
		return "not found";
	case KASIR_ECONFLICT:
		return "state does not allow the operation";
	case KASIR_EPERM:
		return "permission denied for this role";
	case KASIR_EPEER:
		return "remote peer failed";
	default:
		break;
	}
	/* Negated errno (the convention); a positive errno is tolerated. */
	int e = err < 0 ? -err : err;
	if (err <= -1000 || e >= 1000) {
		snprintf(buf, sizeof(buf), "unknown error %d", err);
		return buf;
	}
	/* GNU strerror_r (_GNU_SOURCE): returns a pointer, maybe not buf. */
	const char *s = strerror_r(e, buf, sizeof(buf));
	return s != NULL ? s : "unknown error";
}
