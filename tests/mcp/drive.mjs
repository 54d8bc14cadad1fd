// Drives l402-proxy's MCP server with the official MCP TypeScript SDK client, unmodified
// (npm @modelcontextprotocol/sdk, pinned in package-lock.json, installed by install.sh under
// ~/.cache/l402-proxy/mcp-sdk), for tests/mcp.rs.
//
//   MCP_SDK_DIR=… node drive.mjs '<plan JSON>'
//
// The plan: {"url": "http://l402-proxy.local/mcp", "mode": "proxy" | "bearer",
//            "bearer": "alice:alice-key", "steps": [{"list": true}, {"tool": "quote", "args": {…}}]}
// - mode "proxy": the SDK's StreamableHTTPClientTransport is given a fetch that goes through
//   undici's EnvHttpProxyAgent, which reads the ordinary HTTP_PROXY / HTTPS_PROXY / NO_PROXY
//   (credentials in the proxy URL); the proxy's CA comes from NODE_EXTRA_CA_CERTS.
// - mode "bearer": straight to mcp.listen with `Authorization: Bearer <bearer>` (no proxy).
//
// Prints one JSON object on stdout: {"connected", "error"?, "protocolVersion", "server", "tools",
// "steps": [{"tools": […]} | {"result": CallToolResult} | {"thrown": message}]}.
import { createRequire } from "node:module";
import path from "node:path";

const sdkDir = process.env.MCP_SDK_DIR;
if (!sdkDir) {
  console.log(JSON.stringify({ connected: false, error: "MCP_SDK_DIR is not set" }));
  process.exit(0);
}
const require = createRequire(path.join(sdkDir, "package.json"));
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");
const undici = require("undici");

const plan = JSON.parse(process.argv[2]);

function describe(e) {
  const chain = [];
  for (let c = e; c && chain.length < 5; c = c.cause) {
    // The SDK's StreamableHTTPError carries the HTTP status as `code`.
    chain.push(`${c.name}${c.code !== undefined ? ` (HTTP ${c.code})` : ""}: ${c.message}`);
  }
  return chain.join(" <- ");
}

const dispatcher = plan.mode === "bearer" ? new undici.Agent() : new undici.EnvHttpProxyAgent();
const options = {
  fetch: (url, init) => undici.fetch(url, { ...init, dispatcher }),
};
if (plan.mode === "bearer") {
  options.requestInit = { headers: { Authorization: `Bearer ${plan.bearer}` } };
}
const transport = new StreamableHTTPClientTransport(new URL(plan.url), options);
const client = new Client({ name: "l402-proxy-test", version: "1.0.0" });
const out = { connected: false, steps: [] };
try {
  await client.connect(transport, { timeout: 30_000 });
  out.connected = true;
  out.protocolVersion = transport.protocolVersion ?? null;
  out.server = client.getServerVersion() ?? null;
  out.instructions = client.getInstructions() ?? null;
  // Listed first, always: the SDK then checks every structuredContent against its tool's
  // outputSchema.
  out.tools = (await client.listTools()).tools;
} catch (e) {
  out.error = describe(e);
  console.log(JSON.stringify(out));
  process.exit(0);
}
for (const step of plan.steps ?? []) {
  try {
    if (step.list) {
      const { tools } = await client.listTools();
      out.steps.push({ tools });
    } else {
      // The SDK checks structuredContent against the tool's outputSchema (it throws if not).
      const result = await client.callTool({ name: step.tool, arguments: step.args ?? {} }, undefined, {
        timeout: 60_000,
      });
      out.steps.push({ result });
    }
  } catch (e) {
    out.steps.push({ thrown: describe(e) });
  }
}
await client.close().catch(() => {});
console.log(JSON.stringify(out));
