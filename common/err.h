/*
 * err.h - the one error convention of kasir.
 *
 * Every function that can fail returns int: 0 on success, a negative value
 * on failure.  System errors are returned as -errno (-ENOMEM, -EINVAL,
 * -ETIMEDOUT, ...); conditions specific to kasir use the codes below.
 * Predicates return bool.  Out-parameters come last, are named ret_* and
 * are written only on success.
 */
#ifndef KASIR_ERR_H
#define KASIR_ERR_H

enum kasir_err {
	KASIR_EDB = -1001,	  /* database unreachable / connection broken: transient */
	KASIR_EDBUNKNOWN = -1002, /* connection lost during COMMIT: outcome unknown */
	KASIR_ESQL = -1003,	  /* statement failed (constraint, trigger, syntax) */
	KASIR_ESIG = -1004,	  /* signature / HMAC does not verify */
	KASIR_EPROTO = -1005,	  /* malformed frame or message */
	KASIR_ETYPE = -1006,	  /* unknown message type */
	KASIR_EKEY = -1007,	  /* unknown key id */
	KASIR_ETOOBIG = -1008,	  /* input exceeds its bound */
	KASIR_ECONFIG = -1009,	  /* configuration rejected */
	KASIR_EREJECT = -1010,	  /* permanent: input can never be applied */
	KASIR_ENOTFOUND = -1011,  /* the thing asked for does not exist */
	KASIR_ECONFLICT = -1012,  /* state does not allow the operation */
	KASIR_EPERM = -1013,	  /* caller lacks the role for this */
	KASIR_EPEER = -1014,	  /* remote peer/provider failed (transient) */
};

/* Human-readable text for a kasir or negated errno code; never NULL. */
const char *kasir_strerror(int err);

#endif
