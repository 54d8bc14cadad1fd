#!/usr/bin/env python3
"""Structural checks on `helm template` output (called by deploy/check.sh).

usage: check_manifests.py SCENARIO RENDERED.yaml CONFIG-OUT.yaml
Writes the rendered l402-proxy config to CONFIG-OUT.yaml (for `l402-proxy config check`).
SCENARIO is the name of helm/l402-proxy/ci/SCENARIO-values.yaml; EXPECT below says what it
must render. (The Kubernetes API schemas are checked separately: deploy/kube_validate.py.)
"""
import posixpath
import sys
import yaml

DATA_DIR = "/var/lib/l402-proxy/"
STORE_URL_ENV = "L402_STORE_URL"

# What each ci/ scenario must render. Keys:
#   mode, store (the ledger backend), replicas, pvc (a PVC for the SQLite ledger),
#   monitor (ServiceMonitor | PodMonitor | None: prometheus.io annotations), ca_secret (None: a
#   generated CA), wallet, agents, secret (the credentials Secret), db_secret ((name, key) of
#   the URL), db_ca ((name, key) of the database CA), tls, pool (pool_size or None).
EXPECT = {
    "default": dict(mode="gateway", store="sqlite", replicas=1, pvc=True, monitor=None, ca_secret=None,
                    wallet="lnbits", agents=0, secret="demo-l402-proxy"),
    "gateway-sqlite": dict(mode="gateway", store="sqlite", replicas=1, pvc=True, monitor="ServiceMonitor",
                           ca_secret="l402-proxy-ca", wallet="lnd", agents=2, secret="l402-proxy-credentials"),
    "gateway-postgres": dict(mode="gateway", store="postgres", replicas=3, pvc=False, monitor="PodMonitor",
                             ca_secret="l402-proxy-ca", wallet="cln", agents=1, secret="l402-proxy-credentials",
                             db_secret=("l402-ledger-db", "url"), db_ca=("l402-ledger-db-ca", "ca.crt"),
                             tls="verify-full", pool=16),
    "sidecar-postgres": dict(mode="sidecar", store="postgres", monitor=None, ca_secret="l402-proxy-ca",
                             wallet="lnbits", agents=1, secret="demo-l402-proxy",
                             db_secret=("l402-ledger-db", "database-url"), db_ca=None, tls="require", pool=None),
    "sidecar-sqlite": dict(mode="sidecar", store="sqlite", monitor="PodMonitor", ca_secret=None,
                           wallet="lnbits", agents=1, secret="demo-l402-proxy"),
}

scenario, rendered, config_out = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)


def fail(msg):
    sys.exit(f"{scenario}: {msg}")


def check(cond, msg):
    if not cond:
        fail(msg)


def one(kind, name_suffix=""):
    found = [d for d in by_kind.get(kind, []) if d["metadata"]["name"].endswith(name_suffix)]
    check(len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}")
    return found[0]


if scenario not in EXPECT:
    fail(f"no checks for scenario {scenario!r}: add it to EXPECT in deploy/check_manifests.py")
want = EXPECT[scenario]
sidecar = want["mode"] == "sidecar"
postgres = want["store"] == "postgres"


def check_proxy_container(c, where):
    check(c["name"] == "l402-proxy", f"{where}: proxy container name")
    sc = c["securityContext"]
    check(sc["allowPrivilegeEscalation"] is False, f"{where}: allowPrivilegeEscalation must be false")
    check(sc["readOnlyRootFilesystem"] is True, f"{where}: readOnlyRootFilesystem must be true")
    check(sc["capabilities"]["drop"] == ["ALL"], f"{where}: capabilities must drop ALL")
    check(sc["seccompProfile"]["type"] == "RuntimeDefault", f"{where}: seccomp RuntimeDefault")
    check(sc["runAsNonRoot"] is True, f"{where}: runAsNonRoot")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{where}: liveness /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{where}: readiness /readyz")
    check(c["args"][:3] == ["run", "--config", "/etc/l402-proxy/config/config.yaml"], f"{where}: args {c['args']}")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for v in ("l402-proxy-config", "l402-proxy-secrets", "l402-proxy-data", "l402-proxy-tmp"):
        check(v in mounts, f"{where}: mount {v} missing")
    check(mounts["l402-proxy-secrets"].get("readOnly") is True, f"{where}: secrets must be mounted read-only")
    if sidecar:
        check(c.get("restartPolicy") == "Always", f"{where}: native sidecar needs restartPolicy: Always")
        check(c["startupProbe"]["httpGet"]["path"] == "/readyz", f"{where}: sidecar startupProbe must wait for /readyz")
    else:
        check("restartPolicy" not in c, f"{where}: gateway container must not set restartPolicy")
    env = {e["name"]: e for e in c.get("env", [])}
    # Every *_env variable the config names is set in the container, from a Secret (never a
    # literal), so `l402-proxy run` finds it.
    for key, var in env_vars_named(config):
        check(var in env, f"{where}: the config's {key} names {var}, which the container does not set")
        check("secretKeyRef" in env[var].get("valueFrom", {}), f"{where}: {var} must come from a Secret")
    if postgres:
        ref = env[STORE_URL_ENV]["valueFrom"]["secretKeyRef"]
        check((ref["name"], ref["key"]) == want["db_secret"], f"{where}: {STORE_URL_ENV} from {ref}")
        if want["db_ca"]:
            m = mounts.get("l402-proxy-store-ca")
            check(m is not None and m.get("readOnly") is True, f"{where}: the database CA mounted read-only")
            check(posixpath.join(m["mountPath"], "ca.pem") == config["store"]["postgres"]["ca_file"],
                  f"{where}: store.postgres.ca_file is the mounted CA")
        else:
            check("l402-proxy-store-ca" not in mounts, f"{where}: no database CA mount")
    else:
        check(STORE_URL_ENV not in env, f"{where}: no {STORE_URL_ENV} on SQLite")
        check("l402-proxy-store-ca" not in mounts, f"{where}: no database CA on SQLite")
    return mounts


def check_volumes(volumes, where, mounts_needed):
    names = {v["name"]: v for v in volumes}
    for n in mounts_needed:
        check(n in names, f"{where}: volume {n} missing")
    secret = names["l402-proxy-secrets"]["secret"]
    check(secret["secretName"] == want["secret"], f"{where}: credentials Secret {secret['secretName']}")
    items = [i["key"] for i in secret["items"]]
    check(items and items[0] == "admin-token", f"{where}: secret items {items}")
    if postgres and want["db_ca"]:
        s = names["l402-proxy-store-ca"]["secret"]
        check(s["secretName"] == want["db_ca"][0] and s["items"] == [{"key": want["db_ca"][1], "path": "ca.pem"}],
              f"{where}: database CA volume {s}")
    if want["ca_secret"]:
        s = names["l402-proxy-ca"]["secret"]
        check(s["secretName"] == want["ca_secret"], f"{where}: CA from Secret {want['ca_secret']}")
        check({i["path"] for i in s["items"]} == {"ca.pem", "ca-key.pem"}, f"{where}: CA items")
    else:
        check("l402-proxy-ca" not in names, f"{where}: no CA Secret volume")
    return names


def env_vars_named(c, prefix=""):
    """(key, variable) for every `*_env` key anywhere in the config."""
    out = []
    if isinstance(c, dict):
        for k, v in c.items():
            if k.endswith("_env") and isinstance(v, str):
                out.append((prefix + k, v))
            out += env_vars_named(v, f"{prefix}{k}.")
    elif isinstance(c, list):
        for i, v in enumerate(c):
            out += env_vars_named(v, f"{prefix}{i}.")
    return out


# ---- the config ------------------------------------------------------------------------------
cm = one("ConfigMap", "l402-proxy")
config_text = cm["data"]["config.yaml"]
config = yaml.safe_load(config_text)
check(config["admin"]["token_file"].startswith("/etc/l402-proxy/secrets/"), "admin token from the Secret")
check(config["wallet"]["backend"] == want["wallet"], f"wallet backend {config['wallet']['backend']}")
check(len(config["agents"]) == want["agents"], f"{len(config['agents'])} agents rendered")
store = config["store"]
check(store["backend"] == want["store"], f"store.backend {store.get('backend')}")
if postgres:
    pg = store["postgres"]
    check("path" not in store, "no SQLite path with postgres")
    check(pg["url_env"] == STORE_URL_ENV and "url_file" not in pg, f"the database URL from ${STORE_URL_ENV}")
    check(pg["tls"] == want["tls"], f"store.postgres.tls {pg['tls']}")
    check(("ca_file" in pg) == bool(want["db_ca"]), "store.postgres.ca_file iff a database CA is given")
    check(pg.get("pool_size") == want["pool"], f"store.postgres.pool_size {pg.get('pool_size')}")
    # The only secret in the environment: the database URL. Everything else is a file.
    check([v for _, v in env_vars_named(config)] == [STORE_URL_ENV], f"*_env keys {env_vars_named(config)}")
else:
    check(store["path"].startswith(DATA_DIR), "SQLite ledger under the data dir")
    check("postgres" not in store, "no store.postgres on SQLite")
    check(env_vars_named(config) == [], f"config must read secrets from files, found {env_vars_named(config)}")
if want["ca_secret"]:
    check(config["tls"]["ca_cert"] == "/etc/l402-proxy/ca/ca.pem", "CA cert from the Secret")
    check(config["tls"]["ca_key"] == "/etc/l402-proxy/ca/ca-key.pem", "CA key from the Secret")
elif sidecar:
    check(config["tls"]["ca_cert"] == "/var/run/l402-proxy-ca/ca.pem", "sidecar CA cert on the shared volume")
    check(config["tls"]["ca_key"].startswith(DATA_DIR), "sidecar CA key stays private")
else:
    check(config["tls"]["ca_cert"].startswith(DATA_DIR), "generated CA in the data dir")
with open(config_out, "w") as f:
    f.write(config_text)

# ---- gateway -------------------------------------------------------------------------------
if not sidecar:
    dep = one("Deployment")
    spec = dep["spec"]
    check(spec["replicas"] == want["replicas"], f"replicas {spec['replicas']}")
    if postgres:
        st = spec["strategy"]
        check(st["type"] == "RollingUpdate" and st["rollingUpdate"]["maxUnavailable"] == 0,
              f"PostgreSQL: RollingUpdate without unavailability, got {st}")
    else:
        check(spec["replicas"] <= 1, "SQLite: at most one replica")
        check(spec["strategy"]["type"] == "Recreate", "SQLite: Recreate, never two pods on one ledger")
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(spec["selector"]["matchLabels"].items() <= labels.items(), "selector matches the pod labels")
    check(pod["securityContext"]["runAsNonRoot"] is True, "pod runAsNonRoot")
    check(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "pod seccomp")
    check(len(pod["containers"]) == 1 and "initContainers" not in pod, "gateway: one container")
    check_proxy_container(pod["containers"][0], "gateway")
    vols = check_volumes(pod["volumes"], "gateway", ["l402-proxy-config", "l402-proxy-secrets", "l402-proxy-data"])
    if want["pvc"]:
        pvc = one("PersistentVolumeClaim")
        check(vols["l402-proxy-data"].get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"],
              "the SQLite ledger on the PVC")
    else:
        check("PersistentVolumeClaim" not in by_kind, "no PVC")
        check("emptyDir" in vols["l402-proxy-data"], "data dir in an emptyDir")
    if want["replicas"] > 1:
        check(postgres and want["ca_secret"], "several replicas need PostgreSQL and one CA Secret")
        pdb = one("PodDisruptionBudget")
        check(pdb["apiVersion"] == "policy/v1", "PDB policy/v1")
        check(pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"], "PDB selects the gateway pods")
        check(pdb["spec"].get("maxUnavailable") == 1 and "minAvailable" not in pdb["spec"], "PDB maxUnavailable 1")
    else:
        check("PodDisruptionBudget" not in by_kind, "no PDB for a single replica")
    svc = one("Service")
    check({p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"proxy": 8402, "admin": 9402}, "service ports")
    check(svc["spec"]["selector"] == spec["selector"]["matchLabels"], "Service selects the gateway pods")
    check(config["listen"] == "0.0.0.0:8402", "gateway listens on all interfaces")
    ann = spec["template"]["metadata"]["annotations"]
    check("checksum/config" in ann, "config checksum annotation")
    if want["monitor"] is None:
        check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9402",
              "prometheus.io annotations")
        check("ServiceMonitor" not in by_kind and "PodMonitor" not in by_kind, "no monitors")
    else:
        check("prometheus.io/scrape" not in ann, "no scrape annotations with a monitor")
        other = {"ServiceMonitor": "PodMonitor", "PodMonitor": "ServiceMonitor"}[want["monitor"]]
        check(other not in by_kind, f"no {other}")
        mon = one(want["monitor"])
        if want["monitor"] == "ServiceMonitor":
            check(mon["spec"]["endpoints"][0]["port"] == "admin", "ServiceMonitor scrapes the admin port")
        else:
            check(mon["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"], "PodMonitor selects the gateway pods")
            check(mon["spec"]["podMetricsEndpoints"][0]["port"] == "l402-admin", "PodMonitor port")
    if want["wallet"] == "lnd":
        check(config["wallet"]["lnd"]["macaroon_file"] == "/etc/l402-proxy/secrets/lnd-macaroon", "macaroon file")

# ---- sidecar -------------------------------------------------------------------------------
else:
    check("Deployment" in by_kind and all(d["metadata"]["name"].endswith("example-agent") for d in by_kind["Deployment"]),
          "sidecar: only the example agent Deployment")
    for kind in ("Service", "PersistentVolumeClaim", "PodDisruptionBudget", "ServiceAccount"):
        check(kind not in by_kind, f"sidecar: no {kind}")
    check(config["listen"] == "127.0.0.1:8402", "sidecar listens on loopback only")
    snippet_cm = one("ConfigMap", "-sidecar")
    patch_text = snippet_cm["data"]["deployment-patch.yaml"]
    patch = yaml.safe_load(patch_text)
    if postgres:
        check("shared PostgreSQL database" in patch_text, "snippet comment: the shared ledger")
    else:
        check("RESET" in patch_text, "snippet comment: the per-pod ledger resets with the pod")
    for where, pod in (("snippet", patch["spec"]["template"]["spec"]),
                       ("example agent", one("Deployment", "example-agent")["spec"]["template"]["spec"])):
        check(len(pod["initContainers"]) == 1, f"{where}: one init container")
        check_proxy_container(pod["initContainers"][0], where)
        agent = pod["containers"][0]
        env = {e["name"]: e for e in agent["env"]}
        check(env["HTTPS_PROXY"]["value"] == "http://research:$(L402_AGENT_KEY)@127.0.0.1:8402", f"{where}: HTTPS_PROXY")
        check(list(env).index("L402_AGENT_KEY") < list(env).index("HTTPS_PROXY"), f"{where}: key defined before use")
        check(env["L402_AGENT_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "research-agent-key", f"{where}: agent key Secret")
        check(STORE_URL_ENV not in env, f"{where}: the agent container must not see the database URL")
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"):
            check(env[var]["value"] == "/etc/l402-proxy-ca/ca.pem", f"{where}: {var}")
        check(agent["volumeMounts"] == [{"name": "l402-proxy-ca-public", "mountPath": "/etc/l402-proxy-ca", "readOnly": True}],
              f"{where}: the agent mounts only the CA certificate")
        vols = check_volumes(pod["volumes"], where, ["l402-proxy-ca-public", "l402-proxy-data"])
        check("emptyDir" in vols["l402-proxy-data"], f"{where}: the data dir is an emptyDir")
        public = vols["l402-proxy-ca-public"]
        if want["ca_secret"]:
            check(public["secret"]["secretName"] == want["ca_secret"]
                  and [i["path"] for i in public["secret"]["items"]] == ["ca.pem"],
                  f"{where}: agents get the CA certificate only, never its key")
        else:
            check("emptyDir" in public, f"{where}: the generated CA's certificate on a shared emptyDir")
    if want["monitor"] == "PodMonitor":
        pm = one("PodMonitor")
        check(pm["spec"]["selector"]["matchLabels"] == {"l402-proxy.io/sidecar": "demo-l402-proxy"}, "PodMonitor selects sidecar pods")
        check(pm["spec"]["podMetricsEndpoints"][0]["port"] == "l402-admin", "PodMonitor port")
    else:
        check("PodMonitor" not in by_kind and "ServiceMonitor" not in by_kind, "no monitors")
        ann = patch["spec"]["template"]["metadata"]["annotations"]
        check(ann.get("prometheus.io/scrape") == "true", "snippet: prometheus.io annotations")

print(f"   {scenario}: {len(docs)} objects ({', '.join(sorted(by_kind))}) ok")
