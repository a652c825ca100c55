/*
 * evidence.h - what the two ways of applying payment evidence share
 * (private to kasir-order):
 *   evidence.c        one message at a time (the stream consumer's careful
 *                     pass, a SAVEPOINT around each);
 *   evidence_batch.c  a whole batch: the orders locked with one statement,
 *                     every decision taken in memory, the writes pipelined
 *                     (the consumer's optimistic pass).
 * Both run the same statements and the same state machine (state.c), and
 * write the same rows and order events in the same order, so the careful
 * pass is an exact fallback for the optimistic one.
 */
#ifndef KASIR_ORDER_EVIDENCE_H
#define KASIR_ORDER_EVIDENCE_H

#include <stdbool.h>
#include <stdint.h>

#include "order.h"

struct cJSON;
struct kasir_msg;

/* The fields of one message, whichever stream it came from.  Strings are
 * borrowed from the message. */
struct evidence_msg {
	const char *source; /* "ingest" | "recon" */
	const char *kind;   /* notification|status|not_found|expired */
	int64_t ref;
	const char *order_id;
	const char *received_at;
	const char *checked_at; /* recon: for past_expiry; NULL for ingest */
	bool check_past_expiry;
	struct evidence_in in;
	const char *payment_type, *transaction_id;
	const struct cJSON *raw;
	/* the refund's amount as Midtrans wrote it ("50000.00"): the
	 * notification body's or the Status API answer's; NULL if none */
	const char *refund_amount;
	bool confirm; /* recon: the answer to a confirm.request */
	/* midtrans_state_key() of what it says: "settlement", "capture",
	 * "capture/challenge", "expire" for a 407; "" when none (404) */
	char state_key[24];
};

/*
 * confirm.c: THE decision for one piece of evidence on the locked order o
 * (both apply paths call it, nothing else calls order_decide): the state
 * machine (state.c), then, unless order.signature_only, the confirmation
 * rule: a notification that would move the order is held (CONFIRM_HOLD)
 * and the Status API's answer to it (e->confirm) agrees or contradicts.
 */
void evidence_decide(const struct order_service *s,
                     const struct evidence_msg *e, const struct order_row *o,
                     struct order_decision *d);
/* The confirm.request of a held notification (orders stream), with the
 * order's snapshot (snap: after the update; NULL: read it). */
int confirm_request(struct order_service *s, struct kasir_db *db,
                    const struct evidence_msg *e, const struct cJSON *snap);
/* Counts the confirmation part of a decision. */
void confirm_account(struct order_service *s, const struct order_decision *d);

/* orders.unknown_notifications row: 8 params (see evidence_unknown()). */
extern const struct db_stmt ev_st_unknown;
/* orders.evidence row with its id given ($1 = id, then the 17 columns of
 * evidence_row_params()); RETURNING id, none for a duplicate. */
extern const struct db_stmt ev_st_evidence_id;
/* orders.transitions row: order, from, to, source, ref, evidence id,
 * reason. */
extern const struct db_stmt ev_st_transition;

/* Reads msg; KASIR_EREJECT when it is not evidence kasir-order can use. */
int evidence_parse(const struct kasir_msg *msg, struct evidence_msg *e);
/* The raw JSON text stored with the evidence (caller frees), or NULL. */
char *evidence_raw_text(const struct kasir_msg *msg,
                        const struct evidence_msg *e);
/* The parameters of ev_st_evidence_id for e (p[0] = id, filled by the
 * caller into .id; p + 1 are the 17 columns). */
struct evidence_params {
	char id[24], ref[24], seq[24];
	const char *p[18];
};
int evidence_params(const struct kasir_msg *msg, const struct evidence_msg *e,
                    enum order_status before, enum order_status after,
                    const struct order_decision *d, const char *raw,
                    struct evidence_params *ret);
/* What the evidence changes on the order row (state.c's decision d). */
void evidence_update(const struct evidence_msg *e,
                     const struct order_decision *d, struct order_update *u);
/* The order events of one applied piece of evidence, in their order:
 * the transition's event, access granted (grant_res: the st_grant result)
 * or revoked, order.flagged, order.evidence.  snap: the snapshot after the
 * update (NULL when the row did not change). */
int evidence_emit_all(struct order_service *s, struct kasir_db *db,
                      const struct evidence_msg *e, const struct order_row *o,
                      const struct order_decision *d, enum order_status after,
                      const struct cJSON *snap, const PGresult *grant_res);
/* Counts and logs a decision (once it is part of the transaction). */
void evidence_account(struct order_service *s, const struct kasir_msg *msg,
                      const struct evidence_msg *e, enum order_status before,
                      enum order_status after, const struct order_decision *d);
/* Counts and logs evidence for an unknown order. */
void evidence_account_unknown(struct order_service *s,
                              const struct evidence_msg *e);

/* Batch apply: stream_apply_batch_fn for the "ingest" and "recon"
 * consumers (arg: struct order_service). */
int order_apply_evidence_batch(void *arg, struct kasir_db *db,
                               const struct kasir_msg *const *msgs, size_t n);

#endif
