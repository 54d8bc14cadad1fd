// The official MCP SDK client (unmodified) calling the seller's paid tools through the proxy:
// streamable HTTP over HTTPS, the proxy reached with undici's ProxyAgent (CONNECT, the proxy's
// CA trusted). Prints {"tools": [...], "<tool>": <CallToolResult>} as JSON; {"error": ...} on
// failure. Env: MCP_URL, PROXY (http://user:key@127.0.0.1:port), PROXY_CA (PEM path), TOOLS
// (comma-separated, called with {city: "Oslo"}).
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ProxyAgent, fetch as undiciFetch } from "undici";

try {
  const proxy = new URL(process.env.PROXY);
  const token = "Basic " + Buffer.from(
    `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`,
  ).toString("base64");
  const target = new URL(process.env.MCP_URL);
  const dispatcher = new ProxyAgent({
    uri: `${proxy.protocol}//${proxy.host}`,
    token,
    requestTls: { ca: readFileSync(process.env.PROXY_CA) },
    // Plain HTTP goes to the proxy in absolute form; HTTPS through CONNECT.
    proxyTunnel: target.protocol === "https:",
  });
  const fetchViaProxy = (url, init) => undiciFetch(url, { ...init, dispatcher });
  const transport = new StreamableHTTPClientTransport(new URL(process.env.MCP_URL), {
    fetch: fetchViaProxy,
  });
  const client = new Client({ name: "l402-proxy-paid-tools-test", version: "1.0.0" });
  await client.connect(transport);
  const out = { tools: (await client.listTools()).tools.map((t) => t.name) };
  for (const name of (process.env.TOOLS ?? "weather_mpp,weather_x402,echo").split(",")) {
    out[name] = await client.callTool({ name, arguments: { city: "Oslo" } });
  }
  await client.close();
  console.log(JSON.stringify(out));
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
}
