#!/usr/bin/env python3
"""Structural checks on `helm template` output (called by deploy/check.sh).

usage: check_manifests.py SCENARIO RENDERED.yaml CONFIG-OUT.yaml
Writes the rendered l402-proxy config to CONFIG-OUT.yaml (for `l402-proxy config check`).
"""
import sys
import yaml

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


def check_proxy_container(c, sidecar):
    check(c["name"] == "l402-proxy", "proxy container name")
    sc = c["securityContext"]
    check(sc["allowPrivilegeEscalation"] is False, "allowPrivilegeEscalation must be false")
    check(sc["readOnlyRootFilesystem"] is True, "readOnlyRootFilesystem must be true")
    check(sc["capabilities"]["drop"] == ["ALL"], "capabilities must drop ALL")
    check(sc["seccompProfile"]["type"] == "RuntimeDefault", "seccomp RuntimeDefault")
    check(sc["runAsNonRoot"] is True, "runAsNonRoot")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness /readyz")
    check(c["args"][:3] == ["run", "--config", "/etc/l402-proxy/config/config.yaml"], f"args {c['args']}")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for v in ("l402-proxy-config", "l402-proxy-secrets", "l402-proxy-data", "l402-proxy-tmp"):
        check(v in mounts, f"mount {v} missing")
    check(mounts["l402-proxy-secrets"].get("readOnly") is True, "secrets must be mounted read-only")
    if sidecar:
        check(c.get("restartPolicy") == "Always", "native sidecar needs restartPolicy: Always")
        check(c["startupProbe"]["httpGet"]["path"] == "/readyz", "sidecar startupProbe must wait for /readyz")
    else:
        check("restartPolicy" not in c, "gateway container must not set restartPolicy")


def check_volumes(volumes, mounts_needed):
    names = {v["name"]: v for v in volumes}
    for n in mounts_needed:
        check(n in names, f"volume {n} missing")
    items = [i["key"] for i in names["l402-proxy-secrets"]["secret"]["items"]]
    check(items and items[0] == "admin-token", f"secret items {items}")
    return names


cm = one("ConfigMap", "l402-proxy")
config_text = cm["data"]["config.yaml"]
config = yaml.safe_load(config_text)
check(config["store"]["path"].startswith("/var/lib/l402-proxy/"), "store under the data dir")
check(config["admin"]["token_file"].startswith("/etc/l402-proxy/secrets/"), "admin token from the Secret")
for secretish in ("admin_key_env", "rune_env", "uri_env"):
    check(secretish not in config_text, f"config must read secrets from files, found {secretish}")
with open(config_out, "w") as f:
    f.write(config_text)

if scenario in ("default", "gateway"):
    dep = one("Deployment")
    check(dep["spec"]["replicas"] <= 1, "at most one replica")
    check(dep["spec"]["strategy"]["type"] == "Recreate", "Recreate: never two pods on one ledger")
    pod = dep["spec"]["template"]["spec"]
    check(pod["securityContext"]["runAsNonRoot"] is True, "pod runAsNonRoot")
    check(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", "pod seccomp")
    check(len(pod["containers"]) == 1 and "initContainers" not in pod, "gateway: one container")
    check_proxy_container(pod["containers"][0], sidecar=False)
    vols = check_volumes(pod["volumes"], ["l402-proxy-config", "l402-proxy-secrets", "l402-proxy-data"])
    svc = one("Service")
    check({p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"proxy": 8402, "admin": 9402}, "service ports")
    check(config["listen"] == "0.0.0.0:8402", "gateway listens on all interfaces")
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    check("checksum/config" in ann, "config checksum annotation")
    if scenario == "default":
        check("persistentVolumeClaim" in vols["l402-proxy-data"], "default: PVC for the ledger")
        one("PersistentVolumeClaim")
        check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9402",
              "default: prometheus.io annotations")
        check("ServiceMonitor" not in by_kind and "PodMonitor" not in by_kind, "default: no monitors")
        check(config["wallet"]["backend"] == "lnbits", "default backend")
    else:
        sm = one("ServiceMonitor")
        check(sm["spec"]["endpoints"][0]["port"] == "admin", "ServiceMonitor scrapes the admin port")
        check("prometheus.io/scrape" not in ann, "no scrape annotations with a ServiceMonitor")
        check("PodMonitor" not in by_kind, "no PodMonitor")
        check(vols["l402-proxy-ca"]["secret"]["secretName"] == "l402-proxy-ca", "CA from its Secret")
        check(config["tls"]["ca_cert"] == "/etc/l402-proxy/ca/ca.pem", "CA path")
        check(config["wallet"]["lnd"]["macaroon_file"] == "/etc/l402-proxy/secrets/lnd-macaroon", "macaroon file")
        check(pod["volumes"][1]["secret"]["secretName"] == "l402-proxy-credentials", "existingSecret used")
        check(len(config["agents"]) == 2, "agents rendered")
elif scenario == "sidecar":
    check("Deployment" in by_kind and all(d["metadata"]["name"].endswith("example-agent") for d in by_kind["Deployment"]),
          "sidecar: only the example agent Deployment")
    check("Service" not in by_kind and "PersistentVolumeClaim" not in by_kind, "sidecar: no Service/PVC")
    check(config["listen"] == "127.0.0.1:8402", "sidecar listens on loopback only")
    snippet_cm = one("ConfigMap", "-sidecar")
    patch = yaml.safe_load(snippet_cm["data"]["deployment-patch.yaml"])
    for where, pod in (("snippet", patch["spec"]["template"]["spec"]),
                       ("example agent", one("Deployment", "example-agent")["spec"]["template"]["spec"])):
        check(len(pod["initContainers"]) == 1, f"{where}: one init container")
        check_proxy_container(pod["initContainers"][0], sidecar=True)
        agent = pod["containers"][0]
        env = {e["name"]: e for e in agent["env"]}
        check(env["HTTPS_PROXY"]["value"] == "http://research:$(L402_AGENT_KEY)@127.0.0.1:8402", f"{where}: HTTPS_PROXY")
        check(list(env).index("L402_AGENT_KEY") < list(env).index("HTTPS_PROXY"), f"{where}: key defined before use")
        check(env["L402_AGENT_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "research-agent-key", f"{where}: agent key Secret")
        for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"):
            check(env[var]["value"] == "/etc/l402-proxy-ca/ca.pem", f"{where}: {var}")
        check(agent["volumeMounts"] == [{"name": "l402-proxy-ca-public", "mountPath": "/etc/l402-proxy-ca", "readOnly": True}],
              f"{where}: the agent mounts only the CA certificate")
        vols = check_volumes(pod["volumes"], ["l402-proxy-ca-public", "l402-proxy-data"])
        check("emptyDir" in vols["l402-proxy-data"], f"{where}: per-pod ledger in an emptyDir")
    check(config["tls"]["ca_cert"] == "/var/run/l402-proxy-ca/ca.pem", "sidecar CA cert on the shared volume")
    check(config["tls"]["ca_key"].startswith("/var/lib/l402-proxy/"), "sidecar CA key stays private")
    pm = one("PodMonitor")
    check(pm["spec"]["selector"]["matchLabels"] == {"l402-proxy.io/sidecar": "demo-l402-proxy"}, "PodMonitor selects sidecar pods")
    check(pm["spec"]["podMetricsEndpoints"][0]["port"] == "l402-admin", "PodMonitor port")
else:
    fail(f"no checks for scenario {scenario!r}: add them to deploy/check_manifests.py")

print(f"   {scenario}: {len(docs)} objects ({', '.join(sorted(by_kind))}) ok")
