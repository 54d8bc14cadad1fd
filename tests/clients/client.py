"""One request through l402-proxy with a Python HTTP library, configured the way an agent would:
only from the environment (no proxy or CA argument in the code).

    python3 client.py requests|httpx|aiohttp METHOD URL [JSON_BODY]

  requests: HTTPS_PROXY / HTTP_PROXY, and REQUESTS_CA_BUNDLE for the proxy's CA
  httpx:    HTTPS_PROXY / HTTP_PROXY, and SSL_CERT_FILE
  aiohttp:  trust_env=True, HTTPS_PROXY / HTTP_PROXY, and SSL_CERT_FILE set before the
            interpreter starts (aiohttp builds its default SSL context at import time)

Prints, for tests/clients.rs:
    STATUS <code>
    HEADER <name>: <value>     (x-l402-proxy-* and proxy-authenticate, names lower-case)
    BODY
    <the body, raw, to the end>
or, when the library raised instead of returning a response:
    ERROR <type>: <message>    (one line)
"""

import sys


def wanted(name):
    name = name.lower()
    return name.startswith("x-l402-proxy-") or name == "proxy-authenticate"


def emit(status, headers, body):
    out = [f"STATUS {status}"]
    out += [f"HEADER {k.lower()}: {v}" for k, v in headers if wanted(k)]
    out.append("BODY")
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(body)


def error(e):
    text = " ".join(f"{type(e).__name__}: {e}".split())
    status = getattr(e, "status", None)  # aiohttp.ClientHttpProxyError carries the CONNECT status
    if isinstance(status, int):
        text += f" (status {status})"
    print(f"ERROR {text}")


def with_requests(method, url, body):
    import requests

    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        r = requests.request(method, url, data=body, headers=headers, timeout=30)
    except requests.RequestException as e:
        return error(e)
    emit(r.status_code, r.headers.items(), r.content)


def with_httpx(method, url, body):
    import httpx

    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        # trust_env defaults to True: proxies from HTTPS_PROXY/HTTP_PROXY, CA from SSL_CERT_FILE.
        with httpx.Client(timeout=30) as client:
            r = client.request(method, url, content=body, headers=headers)
    except httpx.HTTPError as e:
        return error(e)
    emit(r.status_code, r.headers.multi_items(), r.content)


def with_aiohttp(method, url, body):
    import asyncio

    import aiohttp

    async def run():
        headers = {"Content-Type": "application/json"} if body is not None else {}
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with aiohttp.ClientSession(trust_env=True, timeout=timeout) as session:
                async with session.request(method, url, data=body, headers=headers) as r:
                    content = await r.read()
                    emit(r.status, r.headers.items(), content)
        except aiohttp.ClientError as e:
            error(e)

    asyncio.run(run())


def main():
    lib, method, url = sys.argv[1], sys.argv[2], sys.argv[3]
    body = sys.argv[4].encode() if len(sys.argv) > 4 else None
    {"requests": with_requests, "httpx": with_httpx, "aiohttp": with_aiohttp}[lib](method, url, body)


if __name__ == "__main__":
    main()
