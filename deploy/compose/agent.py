"""The example agent of deploy/docker-compose.yaml: an ordinary `requests` client that knows
nothing about Lightning. HTTP(S)_PROXY points it at l402-proxy, REQUESTS_CA_BUNDLE makes it trust
the proxy's CA; the proxy pays the seller's L402 challenges from the operator's LNbits wallet.
With AGENT_PROXIES (proxy URLs, space-separated) each round goes through the next one in turn:
the compose file's two replicas share one ledger, so the budget and the tokens are the same
whichever replica answers.

Each round: GET every URL in AGENT_URLS (paid by the proxy on the first call, then served on the
cached token), then ask the proxy for this agent's own budget view over HTTPS
(https://l402-proxy.local/balance, answered by the proxy itself with a certificate from its CA).
"""

import json
import os
import sys
import time

import requests

URLS = os.environ.get(
    "AGENT_URLS", "https://seller:8443/weather/today http://seller:8080/stocks/quote"
).split()
INTERVAL = float(os.environ.get("AGENT_INTERVAL_SECS", "10"))
ROUNDS = int(os.environ.get("AGENT_ROUNDS", "0"))  # 0: forever
PROXIES = os.environ.get("AGENT_PROXIES", "").split()  # empty: HTTP(S)_PROXY

PROXY_HEADERS = (
    "x-l402-proxy-token",
    "x-l402-proxy-paid-msat",
    "x-l402-proxy-fee-msat",
    "x-l402-proxy-remaining-msat",
    "x-l402-proxy-decline",
    "x-l402-proxy-reason",
    "x-l402-proxy-error",
)


def log(msg):
    # One write per entry: an engine's log driver may record the pieces of a line written in
    # several writes as separate partial entries, and show them out of order (podman 4.3 does).
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {msg}\n")
    sys.stdout.flush()


def one_round(session, proxies):
    for url in URLS:
        try:
            r = session.get(url, timeout=90, proxies=proxies)
        except requests.RequestException as e:
            log(f"GET {url}: {e}")
            continue
        extra = {h: r.headers[h] for h in PROXY_HEADERS if h in r.headers}
        log(f"GET {url} -> {r.status_code} {r.text.strip()[:80]!r} {json.dumps(extra)}")
    try:
        r = session.get("https://l402-proxy.local/balance", timeout=30, proxies=proxies)
        log(f"balance -> {r.status_code} {r.text.strip()[:300]}")
    except requests.RequestException as e:
        log(f"balance: {e}")


def main():
    shown = [p.split("@")[-1] for p in PROXIES] or [os.environ.get("HTTPS_PROXY", "(none)").split("@")[-1]]
    log(f"proxy {' then '.join(shown)}, CA {os.environ.get('REQUESTS_CA_BUNDLE')}, urls {URLS}")
    session = requests.Session()  # trust_env: HTTP(S)_PROXY and REQUESTS_CA_BUNDLE apply
    n = 0
    while True:
        proxies = None
        if PROXIES:
            # Per request: requests lets HTTP(S)_PROXY override Session.proxies, not these.
            proxy = PROXIES[n % len(PROXIES)]
            proxies = {"http": proxy, "https": proxy}
            log(f"round {n + 1} via {proxy.split('@')[-1]}")
        one_round(session, proxies)
        n += 1
        if ROUNDS and n >= ROUNDS:
            return 0
        time.sleep(INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
