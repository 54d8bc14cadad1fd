"""One-shot bootstrap of the LNbits of deploy/docker-compose.yaml (Python stdlib only).

1. waits for LNbits; 2. claims the first install (the superuser's password), or logs in when
that already happened; 3. unless the key files from an earlier run still work: creates a
"seller" and a "payer" wallet and credits the payer (FakeWallet funding: play money);
4. writes the keys, one per file, to $KEYS_DIR (readable only by the l402-proxy user):
   payer-admin-key     -> the proxy (wallet.lnbits.admin_key_file)
   seller-invoice-key  -> the demo seller (--lnbits-invoice-key-env)
   lnbits.json         -> everything, for you
5. gives the shared volumes to the l402-proxy user (uid/gid 65532).
Idempotent: `docker compose up` again reuses the wallets. The API calls are those verified
against LNbits 1.6.2 (PUT /api/v1/auth/first_install, POST /api/v1/account,
PUT /users/api/v1/balance).
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

URL = os.environ.get("LNBITS_URL", "http://lnbits:5000").rstrip("/")
USER = os.environ.get("LNBITS_ADMIN_USER", "admin")
PASSWORD = os.environ.get("LNBITS_ADMIN_PASSWORD", "compose-demo-password")
CREDIT = int(os.environ.get("PAYER_CREDIT_SATS", "1000000"))
KEYS = os.environ.get("KEYS_DIR", "/keys")
OWNER = int(os.environ.get("OWNER_UID", "65532"))
OWNED_DIRS = os.environ.get("OWNED_DIRS", "/keys /ca /proxy-ca-key").split()
WAIT_SECS = float(os.environ.get("WAIT_SECS", "120"))


def log(msg):
    print(f"lnbits-init: {msg}", flush=True)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def call(method, path, body=None, headers=None):
    """Returns (status, parsed JSON or None)."""
    req = urllib.request.Request(
        URL + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with OPENER.open(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def wait_for_lnbits():
    deadline = time.monotonic() + WAIT_SECS
    while True:
        try:
            status, _ = call("GET", "/api/v1/health")
            # 307 -> /first_install until the superuser has a password.
            if status in (200, 307):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"lnbits-init: LNbits at {URL} not up after {WAIT_SECS:.0f} s")
        time.sleep(1)


def superuser_token():
    status, body = call("PUT", "/api/v1/auth/first_install",
                        {"username": USER, "password": PASSWORD, "password_repeat": PASSWORD})
    if status == 200:
        log("first install claimed")
        return body["access_token"]
    status, body = call("POST", "/api/v1/auth", {"username": USER, "password": PASSWORD})
    if status == 200:
        log("already installed; logged in")
        return body["access_token"]
    sys.exit(f"lnbits-init: cannot claim the first install nor log in as {USER!r} ({status} {body}); "
             "this LNbits data volume was set up with another password: "
             "`docker compose -f deploy/docker-compose.yaml down -v` starts afresh")


def existing_keys():
    try:
        with open(os.path.join(KEYS, "lnbits.json")) as f:
            keys = json.load(f)
    except (OSError, ValueError):
        return None
    status, _ = call("GET", "/api/v1/wallet", headers={"X-Api-Key": keys.get("payer_admin_key", "")})
    return keys if status == 200 else None


def create_wallets(token):
    keys = {"lnbits_url": URL}
    for role in ("seller", "payer"):
        status, w = call("POST", "/api/v1/account", {"name": role})
        if status != 200:
            sys.exit(f"lnbits-init: creating the {role} wallet: {status} {w}")
        keys[f"{role}_wallet_id"] = w["id"]
        keys[f"{role}_admin_key"] = w["adminkey"]
        keys[f"{role}_invoice_key"] = w["inkey"]
    status, body = call("PUT", "/users/api/v1/balance",
                        {"id": keys["payer_wallet_id"], "amount": CREDIT},
                        {"Authorization": "Bearer " + token})
    if status != 200:
        sys.exit(f"lnbits-init: crediting the payer: {status} {body}")
    log(f"wallets created; payer credited with {CREDIT} sat")
    return keys


def write_secret(name, value):
    path = os.path.join(KEYS, name)
    tmp = path + ".tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400), "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)


def main():
    os.makedirs(KEYS, exist_ok=True)
    wait_for_lnbits()
    token = superuser_token()
    keys = existing_keys()
    if keys:
        log("keys from an earlier run still work; reusing them")
    else:
        keys = create_wallets(token)
    write_secret("payer-admin-key", keys["payer_admin_key"])
    write_secret("seller-invoice-key", keys["seller_invoice_key"])
    write_secret("lnbits.json", json.dumps(keys, indent=2))
    for d in OWNED_DIRS:
        os.makedirs(d, exist_ok=True)
        for root, dirs, files in os.walk(d):
            for p in [root] + [os.path.join(root, x) for x in dirs + files]:
                os.chown(p, OWNER, OWNER)
    status, w = call("GET", "/api/v1/wallet", headers={"X-Api-Key": keys["payer_admin_key"]})
    log(f"payer wallet: {w}; keys in {KEYS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
