// A paid MCP tool served by the registry's own MPP server SDK, mppx (npm, pinned in
// install.sh), over the official MCP SDK's streamable HTTP server transport on 127.0.0.1:
// mppx's `Transport.mcpSdk()` answers an unpaid call with JSON-RPC -32042 and reads the
// credential from `_meta["org.paymentauth/credential"]`. mppx ships no Lightning method, so one
// is defined here with its public `Method.from` / `Method.toServer` API: a `charge` whose request
// carries a BOLT11 invoice (from the test seller, GET $INVOICE_URL) and whose verification is
// SHA-256(preimage) = paymentHash. Listens on $PORT; prints {"port": N} once listening.
import http from "node:http";
import { createHash, randomBytes } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { Method, Receipt, z } from "mppx";
import { Mppx, Transport } from "mppx/server";
import * as zod from "zod";

const lightningCharge = Method.from({
  name: "lightning",
  intent: "charge",
  schema: {
    credential: { payload: z.object({ preimage: z.string() }) },
    request: z.object({
      amount: z.string(),
      currency: z.string(),
      methodDetails: z.object({ invoice: z.string(), paymentHash: z.string() }),
    }),
  },
});

const lightning = Method.toServer(lightningCharge, {
  // A fresh invoice per challenge; a paid retry keeps the invoice its credential paid.
  async request({ credential, request }) {
    if (credential?.challenge?.request?.methodDetails) return credential.challenge.request;
    const minted = await (await fetch(process.env.INVOICE_URL)).json();
    return { ...request, methodDetails: { invoice: minted.bolt11, paymentHash: minted.payment_hash } };
  },
  async verify({ credential }) {
    const { methodDetails } = credential.challenge.request;
    const hash = createHash("sha256")
      .update(Buffer.from(credential.payload.preimage, "hex"))
      .digest("hex");
    if (hash !== methodDetails.paymentHash) throw new Error("the preimage does not pay the invoice");
    return Receipt.from({
      method: "lightning",
      reference: hash,
      status: "success",
      timestamp: new Date().toISOString(),
    });
  },
});

const payment = Mppx.create({
  methods: [lightning],
  realm: "mppx-paid-tools",
  secretKey: randomBytes(32).toString("base64"),
  transport: Transport.mcpSdk(),
});

function mcpServer() {
  const server = new McpServer({ name: "mppx paid tools", version: "1.0.0" });
  server.registerTool(
    "forecast",
    { description: "a paid forecast", inputSchema: { city: zod.string() } },
    async ({ city }, extra) => {
      const result = await payment.charge({
        amount: "21",
        currency: "sat",
        methodDetails: { invoice: "", paymentHash: "" },
      })(extra);
      if (result.status === 402) throw result.challenge;
      return result.withReceipt({ content: [{ type: "text", text: `forecast for ${city}: clear` }] });
    },
  );
  return server;
}

const httpServer = http.createServer(async (req, res) => {
  if (req.method !== "POST") {
    res.writeHead(405).end();
    return;
  }
  let body = "";
  for await (const chunk of req) body += chunk;
  // Stateless: a server and a transport per request, as the SDK's stateless example does.
  const server = mcpServer();
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    enableJsonResponse: process.env.JSON_RESPONSE === "1",
  });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, JSON.parse(body));
});
httpServer.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(JSON.stringify({ port: httpServer.address().port }));
});
