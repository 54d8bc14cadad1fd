// A real NIP-47 wallet service for tests/nwc.rs: the Alby SDK's NWCWalletService (npm
// @getalby/sdk 8.0.3), spending from LNbits wallets through LNbits' REST API.
//
// Env: RELAY_URL (ws://127.0.0.1:…), LNBITS_URL, BRIDGE_KEYS (comma-separated LNbits admin keys,
// one NWC connection per key). For each key it creates a wallet-service key pair and a client
// key, publishes the kind-13194 info event, subscribes, and then prints one line per key:
//   NWC_URI_<i>=nostr+walletconnect://<wallet pubkey>?relay=…&secret=<client secret>
// followed by BRIDGE_READY. Runs until killed (tests/nwc/bridge.sh kills its process group).

// The SDK expects a browser-style global WebSocket (Node 22 has one; Node 20 does not).
globalThis.WebSocket = require("ws");
const { NWCWalletService, NWCWalletServiceKeyPair } = require("@getalby/sdk/nwc");
const crypto = require("node:crypto");
const { getPublicKey } = require("nostr-tools/pure");

const relay = process.env.RELAY_URL;
const lnbits = process.env.LNBITS_URL;
const keys = (process.env.BRIDGE_KEYS || "").split(",").filter(Boolean);
// Connections (by index) whose kind-13194 info event is not published: a client then cannot
// learn that NIP-44 is supported and must fall back to NIP-04.
const noInfo = new Set((process.env.BRIDGE_NO_INFO || "").split(",").filter(Boolean).map(Number));
const METHODS = ["pay_invoice", "lookup_invoice", "get_info", "get_balance"];

async function call(key, method, path, body) {
  const res = await fetch(lnbits + path, {
    method,
    headers: { "X-Api-Key": key, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch (_) {}
  return { status: res.status, json, text };
}

const ok = (result) => ({ result, error: undefined });
const fail = (code, message) => ({ result: undefined, error: { code, message } });

function handler(key) {
  return {
    async getInfo() {
      return ok({
        alias: "lnbits-bridge",
        color: "#000000",
        pubkey: "",
        network: "mainnet",
        block_height: 0,
        block_hash: "",
        methods: METHODS,
        notifications: [],
      });
    },
    async getBalance() {
      const r = await call(key, "GET", "/api/v1/wallet");
      if (r.status !== 200) return fail("INTERNAL", `LNbits HTTP ${r.status}: ${r.text}`);
      return ok({ balance: r.json.balance });
    },
    async payInvoice(request) {
      try {
        const r = await call(key, "POST", "/api/v1/payments", { out: true, bolt11: request.invoice });
        const detail = (r.json && r.json.detail) || r.text;
        if (r.status === 201 || r.status === 200) {
          if (r.json.status === "success") {
            return ok({ preimage: r.json.preimage, fees_paid: Math.abs(r.json.fee || 0) });
          }
          return fail("PAYMENT_FAILED", `LNbits payment ${r.json.status}`);
        }
        if (/insufficient balance|reserve at least/i.test(detail)) {
          return fail("INSUFFICIENT_BALANCE", detail);
        }
        if (r.status === 401 || r.status === 403 || r.status === 404) {
          return fail("UNAUTHORIZED", detail);
        }
        return fail("PAYMENT_FAILED", detail);
      } catch (e) {
        return fail("INTERNAL", String(e));
      }
    },
    async lookupInvoice(request) {
      try {
        if (!request.payment_hash) return fail("NOT_IMPLEMENTED", "lookup by payment_hash only");
        const r = await call(key, "GET", `/api/v1/payments/${request.payment_hash}`);
        if (r.status === 404) return fail("NOT_FOUND", "no such payment");
        if (r.status !== 200) return fail("INTERNAL", `LNbits HTTP ${r.status}: ${r.text}`);
        const d = r.json.details;
        // `details` is only there when the payment belongs to this key's wallet.
        if (!d) return fail("NOT_FOUND", "not a payment of this wallet");
        const state = r.json.paid ? "settled" : d.status === "failed" ? "failed" : "pending";
        return ok({
          type: d.amount < 0 ? "outgoing" : "incoming",
          state,
          invoice: d.bolt11 || "",
          description: d.memo || "",
          description_hash: "",
          preimage: r.json.paid ? r.json.preimage : "",
          payment_hash: request.payment_hash,
          amount: Math.abs(d.amount),
          fees_paid: Math.abs(d.fee || 0),
          created_at: Math.floor(Date.now() / 1000),
          expires_at: 0,
          settled_at: r.json.paid ? Math.floor(Date.now() / 1000) : 0,
        });
      } catch (e) {
        return fail("INTERNAL", String(e));
      }
    },
  };
}

async function main() {
  const service = new NWCWalletService({ relayUrls: [relay] });
  const lines = [];
  for (const [i, key] of keys.entries()) {
    const walletSecret = crypto.randomBytes(32).toString("hex");
    const clientSecret = crypto.randomBytes(32);
    const clientPubkey = getPublicKey(clientSecret);
    if (!noInfo.has(i)) await service.publishWalletServiceInfoEvent(walletSecret, METHODS, []);
    const keypair = new NWCWalletServiceKeyPair(walletSecret, clientPubkey);
    await service.subscribe(keypair, handler(key));
    const uri =
      `nostr+walletconnect://${keypair.walletPubkey}?relay=${encodeURIComponent(relay)}` +
      `&secret=${clientSecret.toString("hex")}`;
    lines.push(`NWC_URI_${i}=${uri}`);
  }
  // Give the relay a moment to register the subscriptions before clients send requests.
  await new Promise((r) => setTimeout(r, 300));
  process.stdout.write(lines.join("\n") + "\nBRIDGE_READY\n");
}

main().catch((e) => {
  console.error("bridge failed:", e);
  process.exit(1);
});
