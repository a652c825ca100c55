/*
 * evidence.h - the one path of payment evidence through kasir-order
 * (private to it; docs/state-machine.md, "The evidence path").
 *
 * A batch of n >= 1 messages from the "ingest" or "recon" stream: the
 * consumer's optimistic pass hands over a whole batch, its careful pass
 * one message inside a SAVEPOINT (to isolate a message that fails).  Both
 * run the same code:
 *
 *   evidence.c  reads the messages and splits the batch into rounds (a
 *               round holds at most one message of each order, in message
 *               order); per round:
 *   store.c       store_evidence_lock(): locks the orders and reads each
 *                 as the database has it now;
 *   confirm.c     evidence_decide(): the decision (state.c's state machine,
 *   state.c       then the Status API confirmation rule);
 *   evidence.c    turns each decision into effects (struct effect);
 *   store.c       store_effects_apply(): one array statement per kind of
 *                 effect, pipelined, then the order events.
 * A round reads what the one before it wrote, so no C code repeats what a
 * statement does.  Nothing in store.c calls back into evidence.c.
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
	 * "capture/challenge", "deny/settled", "expire" for a 407; "" when
	 * none (404) */
	char state_key[24];
};

/* What becomes of one message. */
enum evidence_fate {
	EV_FATE_APPLY = 0, /* decided: recorded, with what the decision does */
	EV_FATE_UNKNOWN,   /* no such order: kept for operators */
	EV_FATE_DUP,       /* (source, ref) already recorded: nothing */
};

/* One message on its way through the path.  evidence.c fills the first
 * part, store_evidence_lock() before and fate, store_effects_apply() the
 * results. */
struct evidence_rec {
	const struct kasir_msg *msg;
	struct evidence_msg e;
	unsigned round; /* earlier messages of its order in the batch */
	enum evidence_fate fate;
	struct order_row before; /* the order as this message finds it */
	struct order_decision d;
	enum order_status after;
	char id[24];  /* orders.evidence id, taken before the writes */
	char ref[24]; /* e.ref and the stream seq as text */
	char seq[24];
	char *raw; /* the JSON text stored with it (owned) */
	/* results */
	struct cJSON *snap; /* ORDER_SNAPSHOT after its update (owned) */
	char grant_email[ORDER_EMAIL_MAX + 1]; /* the entitlement granted */
	char grant_until[40];                  /* "" for lifetime access */
};

/*
 * What a decision does, in the order it happens.  store.c runs the SQL
 * effects of a round by kind (KEEP_UNKNOWN, RECORD, TRANSITION, UPDATE,
 * GRANT, REVOKE: each the same for one row or many), then appends the
 * order events in list order (EVENT, and GRANT's access.granted, REVOKE's
 * access.revoked, where they stand in the list).
 */
enum effect_kind {
	EFFECT_KEEP_UNKNOWN, /* orders.unknown_notifications */
	EFFECT_RECORD,       /* orders.evidence: before, after, result */
	EFFECT_TRANSITION,   /* orders.transitions before -> d.to, naming it */
	EFFECT_UPDATE,       /* the order row (.u): status, transaction,
	                        flags, hold for or end of a confirmation */
	EFFECT_GRANT,        /* entitlement granted; access.granted */
	EFFECT_REVOKE,       /* entitlement revoked; access.revoked */
	EFFECT_EVENT,        /* an order event (.type, .data) */
};

struct effect {
	enum effect_kind kind;
	struct evidence_rec *rec; /* the message it comes from */
	struct order_update u;    /* EFFECT_UPDATE */
	int type;                 /* EFFECT_EVENT: enum msg_type */
	struct cJSON *data;       /* EFFECT_EVENT: its fields (owned) */
	bool snapshot;            /* EFFECT_EVENT: the order's snapshot
	                             first, then .data's fields */
};

/* A growing list of effects (zero-initialise; effects_free()). */
struct effect_list {
	struct effect *v;
	size_t n, cap;
};

/* ---- evidence.c ---- */
/* stream_apply_fn (careful pass, one message) and stream_apply_batch_fn
 * (optimistic pass) for the "ingest" and "recon" consumers; arg is the
 * struct order_service.  The same code with n = 1 and n. */
int order_apply_evidence(void *arg, struct kasir_db *db,
                         const struct kasir_msg *msg);
int order_apply_evidence_batch(void *arg, struct kasir_db *db,
                               const struct kasir_msg *const *msgs, size_t n);

/* ---- confirm.c ---- */
/*
 * THE decision for one piece of evidence on the order o as it stands:
 * the state machine (state.c), then, unless order.signature_only, the
 * confirmation rule: a notification that would move the order is held
 * (CONFIRM_HOLD) and the Status API's answer to it (e->confirm) agrees or
 * contradicts.
 */
void evidence_decide(const struct order_service *s,
                     const struct evidence_msg *e, const struct order_row *o,
                     struct order_decision *d);
/* The fields of the confirm.request of a held notification (an order
 * event: the snapshot comes first); NULL on ENOMEM. */
struct cJSON *confirm_request_fields(const struct evidence_msg *e);
/* Counts the confirmation part of a decision. */
void confirm_account(struct order_service *s, const struct order_decision *d);

/* ---- store.c ---- */
/*
 * Locks the orders of recs[0..n) (FOR UPDATE, in order_id order, so the
 * two consumers never deadlock; each order at most once) and reads each as
 * the database has it now, past_expiry and checked_before_paid judged at
 * the message's checked_at: sets rec->before and rec->fate.
 */
int store_evidence_lock(struct kasir_db *db, struct evidence_rec *const *recs,
                        size_t n);
/* Takes an orders.evidence id for each of recs[0..n) (rec->id). */
int store_evidence_ids(struct kasir_db *db, struct evidence_rec *recs,
                       size_t n);
/*
 * Writes the effects of one round (each order at most once) in db's open
 * transaction: the SQL effects with one pipelined array statement per
 * kind, then the order events on p in list order.  Fills rec->snap and
 * rec->grant_*.  KASIR_ECONFLICT when a row the decision relied on was
 * not written (evidence recorded meanwhile, a grant of an order not PAID).
 */
int store_effects_apply(struct stream_producer *p, struct kasir_db *db,
                        const struct effect_list *l);
void effects_free(struct effect_list *l);

#endif
