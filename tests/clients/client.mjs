// One request through l402-proxy with Node's global fetch, configured the way an agent would be.
// Node 20's fetch ignores HTTPS_PROXY / HTTP_PROXY; npm undici's EnvHttpProxyAgent reads them
// (and NO_PROXY), and setGlobalDispatcher makes the global fetch use it. The proxy's CA comes
// from NODE_EXTRA_CA_CERTS, which Node reads at start-up only.
//
//   node client.mjs METHOD URL [JSON_BODY]
//
// Prints the fixed format tests/clients.rs parses (see client.py).
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";

setGlobalDispatcher(new EnvHttpProxyAgent());

const [method, url, body] = process.argv.slice(2);

function oneLine(s) {
  return String(s).split(/\s+/).join(" ");
}

try {
  const init = { method };
  if (body !== undefined) {
    init.body = body;
    init.headers = { "content-type": "application/json" };
  }
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  const content = Buffer.from(await res.arrayBuffer());
  const lines = [`STATUS ${res.status}`];
  for (const [name, value] of res.headers) {
    if (name.startsWith("x-l402-proxy-") || name === "proxy-authenticate") {
      lines.push(`HEADER ${name}: ${value}`);
    }
  }
  lines.push("BODY");
  process.stdout.write(lines.join("\n") + "\n");
  process.stdout.write(content);
} catch (e) {
  // fetch throws TypeError("fetch failed"); what went wrong is down its `cause` chain (for a 407
  // on CONNECT: RequestAbortedError "Proxy response (407) !== 200 when HTTP Tunneling").
  const chain = [];
  for (let c = e; c && chain.length < 5; c = c.cause) chain.push(`${c.name}: ${c.message}`);
  console.log(`ERROR ${oneLine(chain.join(" <- "))}`);
}
