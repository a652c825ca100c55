/*
 * findings.c - every kind of finding kasirctl doctor can report, declared
 * once: its severity and scenario in the incident SOP, the SOP step to
 * follow, the command that resolves it and the Prometheus alert that pages
 * for the same fact.  docs/kasirctl.md carries the same table (checked by
 * tests/kasirctl/test_doctor.py against `kasirctl doctor --table`).
 *
 * Severity is the SOP's: P0 when payments cannot succeed, P1 when a paid
 * customer is hurt or the evidence path is broken (paid without access,
 * webhooks silent or refused, a daemon or loop silent), P2 notification
 * delivery and bookkeeping, P3 cosmetics.  A new check is one row here and
 * one check in doctor.c.
 */
#include <string.h>

#include "kasirctl.h"
#include "util.h"

/* clang-format off */
static const struct ctl_finding_def findings[] = {
    /* ---- P0: payments cannot succeed ---------------------------------- */
    {.id = "database_down", .severity = "P0", .scenario = "6.1",
     .root_cause = true,
     .step = "nothing is stored while PostgreSQL is down: bring PostgreSQL "
             "back first; the daemons reconnect and catch up by themselves "
             "(the findings listed under it clear with it)",
     .command = "systemctl status postgresql; journalctl -u postgresql; "
                "then kasirctl doctor",
     .alert = "KasirDatabaseUnreachable"},
    {.id = "ingest_answers", .severity = "P0", .scenario = "6.1",
     .step = "kasir-ingest does not answer: Midtrans notifications are "
             "refused, no payment is recorded (the webhook endpoint, 6.3 "
             "step 1); restart it",
     .command = "systemctl restart kasir-ingest; kasirctl status",
     .alert = "KasirPaymentPathDown"},
    {.id = "order_answers", .severity = "P0", .scenario = "6.1",
     .step = "kasir-order does not answer: no order and no Snap "
             "transaction can be created; restart it",
     .command = "systemctl restart kasir-order; kasirctl status",
     .alert = "KasirPaymentPathDown"},
    {.id = "snap_outage", .severity = "P0", .scenario = "6.1",
     .step = "step 2, Snap availability (and step 3, server key / "
             "environment): every recent Snap attempt failed, nobody can "
             "reach the payment page",
     .command = "kasirctl order show ORDER_ID (its snap_error says why); "
                "once Snap answers: kasirctl doctor",
     .alert = "KasirSnapFailing"},
    {.id = "status_api_auth", .severity = "P0", .scenario = "6.1",
     .step = "step 3, server key / environment: the Midtrans Status API "
             "refuses kasir-reconciler's server key, no payment can be "
             "proven",
     .command = "replace the server key credential (docs/operations.md, "
                "key rotation), systemctl restart kasir-reconciler, then "
                "kasirctl reconcile --pending --reason \"...\"",
     .alert = "KasirStatusApiAuthBroken"},
    {.id = "no_payments", .severity = "P0", .scenario = "6.1",
     .step = "step 1, Midtrans dashboard: orders are created but none got "
             "PAID in the last hour",
     .command = "kasirctl status; kasirctl reconcile --pending --reason "
                "\"...\"",
     .alert = "KasirNoPayments"},

    /* ---- P1: paid customers hurt, evidence path broken, silence ------- */
    {.id = "paid_without_access", .severity = "P1", .scenario = "6.2",
     .step = "step 3: the order is PAID with Midtrans proof, grant the "
             "entitlement; then step 4-5, receipt and customer follow-up",
     .command = "kasirctl access grant ORDER_ID --reason \"...\" "
                "--incident INC-ID",
     .alert = "KasirPaidWithoutAccess"},
    {.id = "webhook_silence", .severity = "P1", .scenario = "6.3",
     .step = "steps 1 and 3: notification URL in the Midtrans dashboard, "
             "proxy / TLS / firewall in front of kasir-ingest; step 4: "
             "switch to reconciliation",
     .command = "kasirctl reconcile-mode on --reason \"...\"",
     .alert = "KasirWebhookSilence"},
    {.id = "signature_failures", .severity = "P1", .scenario = "6.3",
     .step = "step 2, signature logic: compare kasir-ingest's server key "
             "with the dashboard (a rotation?) or block the source; "
             "refused bodies are kept in ingest.quarantine",
     .command = "kasirctl order show ORDER_ID (refused bodies naming it); "
                "kasirctl reconcile --pending --reason \"...\"",
     .alert = "KasirWebhookRefused"},
    {.id = "notification_contradicted", .severity = "P1", .scenario = "6.3",
     .step = "step 2, signature logic: signed notifications whose status "
             "contradicts itself (a leaked body replayed with its status "
             "rewritten) were refused; find where bodies leak",
     .command = "kasirctl order show ORDER_ID (refused bodies naming it)",
     .alert = "KasirNotificationRewritten"},
    {.id = "midtrans_contradicted", .severity = "P1", .scenario = "6.3",
     .step = "step 2, signature logic: a correctly signed notification "
             "that the Midtrans Status API contradicts (possible forgery or "
             "key leak); the order did not move on it.  Find where "
             "notification bodies leak (logs, proxies, plain HTTP); rotate "
             "the server key if the body was never sent by Midtrans",
     .command = "kasirctl order show ORDER_ID (the notification and "
                "Midtrans's answer)",
     .alert = "KasirNotificationContradicted"},
    {.id = "notifier_answers", .severity = "P1", .scenario = "6.5",
     .step = "step 1, restart the service; it catches up from its cursors "
             "(step 3, watch the backlog drain)",
     .command = "systemctl restart kasir-notifier; kasirctl status",
     .alert = "KasirDaemonDown"},
    {.id = "reconciler_answers", .severity = "P1", .scenario = "6.5",
     .step = "step 1, restart the service; step 4, make sure reconciliation "
             "runs again",
     .command = "systemctl restart kasir-reconciler; kasirctl status",
     .alert = "KasirDaemonDown"},
    {.id = "facts", .severity = "P1", .scenario = "6.5",
     .step = "the daemon answers status but not its checklist: look at "
             "its journal; step 1, restart it",
     .command = "journalctl -u <unit>; systemctl restart <unit>",
     .alert = NULL},
    {.id = "loop_silent", .severity = "P1", .scenario = "6.5",
     .step = "step 1-2: a loop of a daemon that still answers has done no "
             "database work past its bound (PostgreSQL is up); restart the "
             "service and make sure no lock is stuck",
     .command = "systemctl restart <unit>; kasirctl status",
     .alert = "KasirLoopSilent"},
    {.id = "stream_lag", .severity = "P1", .scenario = "6.5",
     .step = "step 3, backlog drain: the consumer catches up by replay; "
             "restart it if the lag does not fall",
     .command = "kasirctl status (the lag must fall); journalctl STREAM=...",
     .alert = "KasirStreamLagGrowing"},
    {.id = "expiry_unchecked", .severity = "P1", .scenario = "6.3",
     .step = "step 5, pending orders: orders past expiry were never "
             "checked with Midtrans (is reconciliation running? 6.5 step "
             "4)",
     .command = "kasirctl reconcile --pending --reason \"...\"",
     .alert = "KasirStalePendingOrders"},
    {.id = "pending_past_expiry", .severity = "P1", .scenario = "6.3",
     .step = "step 5, pending orders: ask Midtrans about them",
     .command = "kasirctl reconcile --pending --reason \"...\"",
     .alert = "KasirPendingTooLong"},
    {.id = "awaiting_confirmation", .severity = "P1", .scenario = "6.2",
     .step = "a customer paid and waits for access: notifications held "
             "until the Midtrans Status API confirms them; kasir-reconciler "
             "gets no answer (5xx, timeouts, a refused key); the orders "
             "move by themselves once it answers",
     .command = "kasirctl status; journalctl -u kasir-reconciler",
     .alert = "KasirConfirmationsWaiting"},
    {.id = "receipt_without_paid", .severity = "P1", .scenario = "7",
     .step = "forbidden: a success notification without PAID; contain "
             "first, then look at the order and contact the customer",
     .command = "kasirctl reminders pause --reason \"...\"; kasirctl order "
                "show ORDER_ID",
     .alert = NULL},

    /* ---- P2: notifications, bookkeeping -------------------------------- */
    {.id = "provider_failing", .severity = "P2", .scenario = "6.4",
     .step = "step 2, SMTP / WhatsApp API: the provider refuses or fails; "
             "fix it, then step 4, requeue",
     .command = "kasirctl notify requeue --reason \"...\"",
     .alert = "KasirNotifierProviderFailing"},
    {.id = "dead_jobs", .severity = "P2", .scenario = "6.4",
     .step = "step 4, requeue failed jobs once the channel works",
     .command = "kasirctl notify requeue --dead --reason \"...\"",
     .alert = "KasirNotificationDead"},
    {.id = "stuck_jobs", .severity = "P2", .scenario = "6.4",
     .step = "step 1 and 3: outbox backlog; restart the worker",
     .command = "systemctl restart kasir-notifier; kasirctl notify "
                "requeue --reason \"...\"",
     .alert = "KasirNotificationWaiting"},
    {.id = "uncertain_sends", .severity = "P2", .scenario = "6.4",
     .step = "step 4, never requeue blindly: ask the customer (or the "
             "provider's log) whether the uncertain send arrived, then "
             "decide each job",
     .command = "kasirctl notify decide JOB_ID delivered|resend --reason "
                "\"...\"",
     .alert = "KasirNotificationUncertain"},
    {.id = "paid_without_receipt", .severity = "P2", .scenario = "6.4",
     .step = "step 4: the receipt of a PAID order never went out",
     .command = "kasirctl notify resend ORDER_ID --kind receipt --reason "
                "\"...\"",
     .alert = NULL},
    {.id = "snap_failures", .severity = "P2", .scenario = "6.1",
     .step = "step 2, Snap availability: some Snap attempts failed, "
             "others succeed; these customers could not pay",
     .command = "kasirctl order show ORDER_ID",
     .alert = NULL},
    {.id = "unknown_orders", .severity = "P2", .scenario = "6.3",
     .step = "notifications for orders kasir does not know: another "
             "system on this Midtrans account, or a lost order",
     .command = "kasirctl order show ORDER_ID",
     .alert = NULL},
    {.id = "access_without_paid", .severity = "P2", .scenario = "6.2",
     .step = "step 2: look for refund / chargeback evidence; finance "
             "decides; never set a status by hand",
     .command = "kasirctl order show ORDER_ID",
     .alert = NULL},
    {.id = "amount_mismatch", .severity = "P2", .scenario = "6.2",
     .step = "step 2: compare amount and status with the Midtrans "
             "dashboard; finance decides",
     .command = "kasirctl order show ORDER_ID",
     .alert = "KasirOrdersFlagged"},

    /* ---- P3 ------------------------------------------------------------- */
    {.id = "reminders_paused", .severity = "P3", .scenario = "6.4",
     .step = "reminders were paused to contain an incident; resume them "
             "when it is over",
     .command = "kasirctl reminders resume --reason \"...\"",
     .alert = "KasirRemindersPausedLong"},
};
/* clang-format on */

const struct ctl_finding_def *
ctl_finding_def(const char *id)
{
	for (size_t i = 0; i < ARRAY_SIZE(findings); i++)
		if (strcmp(findings[i].id, id) == 0)
			return &findings[i];
	return NULL;
}

const struct ctl_finding_def *
ctl_finding_defs(size_t *ret_count)
{
	*ret_count = ARRAY_SIZE(findings);
	return findings;
}
