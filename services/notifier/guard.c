/*
 * guard.c - the last check before a message goes out.
 *
 * Runs inside the transaction that claims the job, on the notifier's own
 * record of the order (notify.orders, read FOR SHARE).  The receipt guard
 * is the SOP's absolute rule: a receipt is sent only while the order is
 * PAID and its access was not revoked.  A receipt job created by any other
 * path (inserted by hand, left over from before a refund) is therefore
 * cancelled, never sent.  Payment instructions and reminders only make
 * sense while the order is still PENDING.
 */
#include <stdbool.h>
#include <string.h>

#include "notifier.h"

bool
guard_allows(enum notify_kind kind, const char *status, bool revoked,
             const char **ret_why, bool *ret_guard)
{
	*ret_guard = false;
	switch (kind) {
	case KIND_RECEIPT:
		if (status == NULL) {
			*ret_guard = true;
			*ret_why = "receipt guard: no record of the order";
			return false;
		}
		if (strcmp(status, "PAID") != 0) {
			*ret_guard = true;
			*ret_why = "receipt guard: order is not PAID";
			return false;
		}
		if (revoked) {
			*ret_guard = true;
			*ret_why = "receipt guard: access was revoked";
			return false;
		}
		return true;
	case KIND_INSTRUCTIONS:
	case KIND_REMINDER:
		if (status == NULL || strcmp(status, "PENDING") != 0) {
			*ret_why = "order is no longer pending";
			return false;
		}
		return true;
	case KIND_EXPIRY:
		if (status == NULL || strcmp(status, "EXPIRED") != 0) {
			*ret_why = "order is not expired";
			return false;
		}
		return true;
	case KIND_REFUND:
		/* a partial refund may leave the order PAID */
		if (status == NULL || (strcmp(status, "REFUNDED") != 0 &&
		                       strcmp(status, "PAID") != 0)) {
			*ret_why = "order is not refunded";
			return false;
		}
		return true;
	default:
		*ret_why = "unknown kind";
		return false;
	}
}
