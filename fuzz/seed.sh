#!/usr/bin/env bash
# Regenerates the committed seed corpora fuzz/corpus/<target>/ from the test fixtures
# (tests/fixtures/l402-vectors.json and tests/fixtures/third-party-402s/*.headers) plus a few
# hand-written inputs. Run by hand after the fixtures change, then commit fuzz/corpus/.
# fuzz/run.sh never runs it: it reads the committed seeds (and writes what it finds elsewhere).
#
# Every file is rewritten from scratch and named after what it is, so a rerun gives the same
# files, except the two TLS ClientHellos of proxy_request (Python's ssl module puts fresh
# random values and key shares in each hello).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 - <<'PY'
import base64, json, os, pathlib, re, shutil, ssl

root = pathlib.Path(".")
fixtures = root / "tests/fixtures"
vectors = json.loads((fixtures / "l402-vectors.json").read_text())
third = sorted((fixtures / "third-party-402s").glob("*.headers"))
out = root / "fuzz/corpus"

corpora = {}
def seed(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:80]
    corpora.setdefault(target, {})[name] = data

def b64any(s):
    s = s.strip().rstrip("=")
    s += "=" * (-len(s) % 4)
    alt = b"-_" if ("-" in s or "_" in s) else None
    return base64.b64decode(s, altchars=alt)

INVOICE = re.compile(r"ln(?:bcrt|tbs|bc|tb|sb)[0-9a-z]{20,}", re.I)
invoices = {}
def found_invoices(text, where):
    for m in INVOICE.findall(text):
        invoices.setdefault(m, where)

# ---- challenge: header blocks (the fixture files as they are) and single challenge lines ----
for f in third:
    text = f.read_text()
    seed("challenge", f"fixture-{f.stem}", text)
    found_invoices(text, f"fixture-{f.stem}")
    for line in text.splitlines():
        name, _, value = line.partition(":")
        value = value.strip()
        if name.lower() == "payment-required":
            found_invoices(b64any(value).decode("utf-8", "replace"), f"fixture-{f.stem}-x402")
        for req in re.findall(r'request="([^"]+)"', line):
            found_invoices(b64any(req).decode("utf-8", "replace"), f"fixture-{f.stem}-mpp")
lines = []
for i, c in enumerate(vectors["challenges"]):
    seed("challenge", f"vector-challenge-{i}", c["header_value"])
    lines.append(c["header_value"])
    found_invoices(c["header_value"], f"vector-challenge-{i}")
for i, c in enumerate(vectors["mpp"]):
    seed("challenge", f"vector-mpp-{i}", c["header_value"])
    lines.append(c["header_value"])
    found_invoices(json.dumps(c), f"vector-mpp-{i}")
# Shapes the grammar must split: a 401 re-challenge, LSAT and L402 on two lines and folded
# into one value, an L402 line beside an MPP one, a named header next to a raw one.
l402 = vectors["challenges"][1]["header_value"]
lsat = re.sub(r"^L402", "LSAT", l402)
seed("challenge", "shape-401", "HTTP/1.1 401 Unauthorized\n" + l402 + "\n")
seed("challenge", "shape-lsat-then-l402-lines", lsat + "\n" + l402 + "\n")
seed("challenge", "shape-folded-lsat-l402", lsat + ", " + l402)
seed("challenge", "shape-l402-and-payment", "\n".join(lines))
seed("challenge", "shape-basic-then-l402-folded", 'Basic realm="x", ' + l402)
seed("challenge", "shape-named-and-raw",
     "www-authenticate: Bearer realm=\"api\"\r\n" + l402 + "\r\ncontent-type: application/json\r\n")
seed("challenge", "shape-fewsats-json-only", "content-type: application/json\n")
# x402 on Lightning (the fixture's offer is on an EVM network): as sent (base64), and in the
# harness's `x-fuzz-payment-required-json:` form, which it base64-encodes itself.
x402 = json.dumps({"x402Version": 2, "resource": {"url": "http://198.51.100.7/x"}, "accepts": [
    {"scheme": "exact", "network": "eip155:8453", "amount": "1"},
    {"scheme": "exact", "network": "bip122:000000000019d6689c085ae165831e93",
     "amount": "2500000000", "payTo": "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad",
     "maxTimeoutSeconds": 60, "extra": {"invoice": vectors["bolt11_valid"][1]["invoice"]}}]},
    separators=(",", ":"))
seed("challenge", "x402-lightning", "payment-required: " + base64.b64encode(x402.encode()).decode() + "\n")
seed("challenge", "x402-lightning-json", "x-fuzz-payment-required-json: " + x402 + "\n")

# ---- macaroon: raw bytes and their base64 text, plus tokens from the challenges ----
def packet_v2(field, data):
    out = bytearray([field])
    n = len(data)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data

def packet_v1(name, value):
    n = 4 + len(name) + 1 + len(value) + 1
    return b"%04x" % n + name + b" " + value + b"\n"

for i, m in enumerate(vectors["macaroons"]):
    raw = b64any(m["base64"])
    seed("macaroon", f"vector-{i}-{m['decoded']['format']}-raw", raw)
    seed("macaroon", f"vector-{i}-{m['decoded']['format']}-base64", m["base64"])
for i, c in enumerate(vectors["challenges"]):
    tok = c.get("expect", {}).get("token")
    if tok:
        seed("macaroon", f"challenge-{i}-token", tok)
# A V2 macaroon with a third-party caveat (as the unit tests build one), and a V1 one.
tp = (b"\x02" + packet_v2(1, b"loc") + packet_v2(2, b"id") + b"\x00"
      + packet_v2(2, b"a=b") + b"\x00"
      + packet_v2(1, b"https://tp") + packet_v2(2, b"tp-cid") + packet_v2(4, b"\x09" * 40) + b"\x00"
      + b"\x00" + packet_v2(6, b"\x07" * 32))
seed("macaroon", "hand-v2-third-party", tp)
v1 = (packet_v1(b"location", b"L") + packet_v1(b"identifier", b"id") + packet_v1(b"cid", b"a=b")
      + packet_v1(b"cid", b"tp") + packet_v1(b"vid", b"v") + packet_v1(b"cl", b"https://tp")
      + packet_v1(b"signature", b"\x01" * 32))
seed("macaroon", "hand-v1-third-party", v1)
seed("macaroon", "hand-v1-third-party-base64", base64.b64encode(v1))

# ---- invoice: every BOLT11 string in the vectors and fixtures ----
for i, v in enumerate(vectors["bolt11_valid"]):
    seed("invoice", f"vector-valid-{i}", v["invoice"])
for i, v in enumerate(vectors["bolt11_invalid"]):
    seed("invoice", f"vector-invalid-{i}", v["invoice"])
known = {v["invoice"] for v in vectors["bolt11_valid"] + vectors["bolt11_invalid"]}
for inv, where in sorted(invoices.items(), key=lambda kv: kv[1]):
    if inv not in known:
        seed("invoice", f"{where}-invoice", inv)
        known.add(inv)
if invoices:
    first = min(invoices, key=lambda k: invoices[k])
    seed("invoice", "shape-uppercase", first.upper())
    seed("invoice", "shape-lightning-prefix", "lightning:" + first)

# ---- proxy_request: what agents send ----
AUTH = "Proxy-Authorization: Basic " + base64.b64encode(b"fuzz:fuzz-key").decode() + "\r\n"
def req(head, body=b""):
    return head.replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode() + body

def client_hello(sni, alpn):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()

P = "proxy_request"
seed(P, "get-refused-loopback", req(f"GET http://127.0.0.1:8080/ HTTP/1.1\nHost: 127.0.0.1:8080\n{AUTH}\n"))
seed(P, "get-public-unreachable", req(f"GET http://198.51.100.7/paid?q=1 HTTP/1.1\nHost: 198.51.100.7\n{AUTH}Accept: */*\n\n"))
seed(P, "get-name-unresolvable", req(f"GET http://api.example/x HTTP/1.1\nHost: api.example\n{AUTH}\n"))
seed(P, "get-self-balance", req(f"GET http://l402-proxy.local/balance HTTP/1.1\nHost: l402-proxy.local\n{AUTH}\n"))
seed(P, "get-self-other-path", req(f"GET http://l402-proxy.local/nope HTTP/1.1\n{AUTH}\n"))
seed(P, "get-no-auth", req("GET http://l402-proxy.local/ HTTP/1.1\nHost: l402-proxy.local\n\n"))
seed(P, "get-wrong-key", req("GET http://l402-proxy.local/ HTTP/1.1\nProxy-Authorization: Basic "
                             + base64.b64encode(b"fuzz:wrong").decode() + "\n\n"))
seed(P, "get-bearer-auth", req("GET http://l402-proxy.local/ HTTP/1.1\nProxy-Authorization: Bearer fuzz-key\n\n"))
seed(P, "get-origin-form", req(f"GET / HTTP/1.1\nHost: 198.51.100.7\n{AUTH}\n"))
seed(P, "get-http10", req(f"GET http://198.51.100.7/ HTTP/1.0\n{AUTH}\n"))
seed(P, "get-ipv6-literal", req(f"GET http://[2001:db8::1]:8080/ HTTP/1.1\n{AUTH}\n"))
seed(P, "get-forged-l402-headers", req(f"GET http://198.51.100.7/ HTTP/1.1\n{AUTH}Authorization: L402 abc:def\n"
                                       "X-L402-Proxy-Token: paid\nConnection: keep-alive, X-Foo\nX-Foo: 1\n\n"))
seed(P, "post-content-length", req(f"POST http://198.51.100.7/api HTTP/1.1\n{AUTH}Content-Type: application/json\n"
                                   "Content-Length: 14\n\n", b'{"prompt":"x"}'))
seed(P, "post-chunked", req(f"POST http://198.51.100.7/api HTTP/1.1\n{AUTH}Transfer-Encoding: chunked\n\n",
                            b"5\r\nhello\r\n0\r\n\r\n"))
seed(P, "post-expect-continue", req(f"PUT http://198.51.100.7/u HTTP/1.1\n{AUTH}Expect: 100-continue\n"
                                    "Content-Length: 4\n\n", b"data"))
seed(P, "pipelined-two", req(f"GET http://l402-proxy.local/balance HTTP/1.1\n{AUTH}\n"
                             f"GET http://l402-proxy.local/ HTTP/1.1\n{AUTH}Connection: close\n\n"))
seed(P, "upgrade-websocket", req(f"GET http://198.51.100.7/ws HTTP/1.1\n{AUTH}Connection: Upgrade\nUpgrade: websocket\n"
                                 "Sec-WebSocket-Version: 13\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n\n"))
seed(P, "connect-tunnel-unreachable", req(f"CONNECT 203.0.113.9:443 HTTP/1.1\nHost: 203.0.113.9:443\n{AUTH}\n"))
seed(P, "connect-refused-loopback", req(f"CONNECT localhost:443 HTTP/1.1\n{AUTH}\n"))
seed(P, "connect-no-port", req(f"CONNECT api.example HTTP/1.1\n{AUTH}\n"))
seed(P, "connect-self-plain-http", req(f"CONNECT l402-proxy.local:443 HTTP/1.1\n{AUTH}\n"
                                       "GET /balance HTTP/1.1\nHost: l402-proxy.local\n\n"))
seed(P, "connect-intercept-plain-http", req(f"CONNECT 198.51.100.7:80 HTTP/1.1\n{AUTH}\n"
                                            "GET /paid HTTP/1.1\nHost: 198.51.100.7\n\n"))
seed(P, "connect-intercept-tls-h2",
     req(f"CONNECT 198.51.100.7:443 HTTP/1.1\n{AUTH}\n") + client_hello("api.example", ["h2", "http/1.1"]))
seed(P, "connect-self-tls-http1",
     req(f"CONNECT l402-proxy.local:443 HTTP/1.1\n{AUTH}\n") + client_hello("l402-proxy.local", ["http/1.1"]))
seed(P, "h2-prior-knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
seed(P, "garbage-line", b"\x16\x03\x01\x00\x05hello\r\n\r\n")

total_files = total_bytes = 0
for target, files in sorted(corpora.items()):
    d = out / target
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    for name, data in sorted(files.items()):
        (d / name).write_bytes(data)
        total_files += 1
        total_bytes += len(data)
    print(f"{target}: {len(files)} seeds, {sum(map(len, files.values()))} bytes")
print(f"total: {total_files} files, {total_bytes} bytes")
assert total_files <= 200 and total_bytes <= 1 << 20, "keep the seeds small"
PY
