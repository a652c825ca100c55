// The naive peer of bench/a-ingest (docs/performance.md, "ingest"):
// a Midtrans webhook receiver written the way a typical Express + pg
// service is.  For each notification it checks the signature
// (SHA512(order_id + status_code + gross_amount + server key)), then in
// one transaction INSERTs the notification and UPDATEs the order row, and
// answers 200 after COMMIT.  One Node process, one pg.Pool.
//
// Not part of kasir: it exists only to be measured beside kasir-ingest
// on the same PostgreSQL, with the same client count, in the same run.
//
// Configuration (environment, set by bench/kbench.py):
//   PEER_LISTEN      host:port to listen on
//   PEER_PATH        the notification path
//   PEER_KEY_FILE    file holding the Midtrans server key
//   PEER_POOL        pg pool size (the benchmark's connection count)
//   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE   (node-postgres reads them)
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const express = require("express");
const { Pool } = require("pg");

const [host, port] = (process.env.PEER_LISTEN || "127.0.0.1:8099").split(":");
const path = process.env.PEER_PATH || "/midtrans/notification";
const serverKey = fs.readFileSync(process.env.PEER_KEY_FILE, "utf8").trim();
const pool = new Pool({ max: Number(process.env.PEER_POOL || 32) });

const app = express();
app.disable("x-powered-by");

function signatureOk(n) {
  if (typeof n.order_id !== "string" || typeof n.status_code !== "string" ||
      typeof n.gross_amount !== "string" || typeof n.signature_key !== "string")
    return false;
  const want = crypto.createHash("sha512")
    .update(n.order_id + n.status_code + n.gross_amount + serverKey)
    .digest();
  const got = Buffer.from(n.signature_key, "hex");
  return got.length === want.length && crypto.timingSafeEqual(got, want);
}

app.post(path, express.json({ limit: "64kb" }), async (req, res) => {
  const n = req.body;
  if (!signatureOk(n)) {
    res.status(401).json({ error: "bad signature" });
    return;
  }
  let client;
  try {
    client = await pool.connect();
    await client.query("BEGIN");
    await client.query(
      "INSERT INTO peer.notification (order_id, transaction_status," +
      " status_code, gross_amount, transaction_id, payment_type, raw)" +
      " VALUES ($1, $2, $3, $4, $5, $6, $7)",
      [n.order_id, n.transaction_status, n.status_code, n.gross_amount,
       n.transaction_id, n.payment_type, JSON.stringify(n)]);
    await client.query(
      "UPDATE peer.orders SET status = $2, updated_at = now()" +
      " WHERE order_id = $1",
      [n.order_id, n.transaction_status]);
    await client.query("COMMIT");
    res.status(200).json({ ok: true });
  } catch (e) {
    if (client) await client.query("ROLLBACK").catch(() => {});
    console.error("peer: notification not stored:", e.message);
    res.status(500).json({ error: "not stored" });
  } finally {
    if (client) client.release();
  }
});

app.get("/healthz", (req, res) => res.status(200).send("ok\n"));

const server = app.listen(Number(port), host, () => {
  console.log(`peer: listening on ${host}:${port}${path}`);
});
server.keepAliveTimeout = 30000;

process.on("SIGTERM", () => {
  server.close(() => pool.end().then(() => process.exit(0)));
});
