#!/usr/bin/env python3
"""Generates helm/l402-proxy/values.schema.json (strict: additionalProperties false on every
object the chart defines). Edit this, then:  python3 deploy/helm-schema.py > helm/l402-proxy/values.schema.json
deploy/check.sh fails when the committed schema differs from this output."""
import json

def obj(props, required=(), desc=None, **kw):
    o = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        o["required"] = list(required)
    if desc:
        o["description"] = desc
    o.update(kw)
    return o

S = {"type": "string"}
B = {"type": "boolean"}
def I(minimum=0, **kw): return {"type": "integer", "minimum": minimum, **kw}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
STRLIST = {"type": "array", "items": {"type": "string"}}
DUR = {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$"}
URL = {"type": "string", "pattern": "^https?://[^/\\s]+"}
HOSTPORT = {"type": "string", "pattern": "^(\\[[0-9a-fA-F:.]+\\]|[^\\s:\\[\\]]+):[0-9]{1,5}$"}
QTY = {"type": ["string", "integer", "number"]}

limits = obj({k: I(0) for k in ("per_request_sats", "hourly_sats", "daily_sats", "weekly_sats", "monthly_sats", "total_sats")},
             desc="Spending limits in sats; a missing key means no limit of that kind.")
limits["properties"]["per_request_sats"] = I(1)

config = obj({
    "tls": obj({"intercept": STRLIST, "upstream_roots": STRLIST}),
    "guard": obj({"allow_private": B, "allow": {"type": "array", "items": HOSTPORT}}),
    "wallet": obj({
        "backend": {"type": "string", "enum": ["lnbits", "lnd", "cln", "nwc", "dev"]},
        "network": {"type": "string", "enum": ["", "bitcoin", "testnet", "signet", "regtest"]},
        "max_fee_sats": I(0),
        "payment_timeout_secs": I(1),
        "lnbits": obj({"url": URL}, required=["url"]),
        "lnd": obj({"url": URL}, required=["url"]),
        "cln": obj({"url": URL}, required=["url"]),
        "dev": obj({"balance_sats": I(0), "pay_delay_ms": I(0), "fee_msat": I(0),
                    "secret": {"type": "string", "minLength": 1}}),
    }, required=["backend"]),
    "http": obj({"max_replay_body_bytes": I(0, maximum=268435456), "connect_timeout_secs": I(0), "pool_idle_secs": I(0)}),
    "operator_limits": limits,
    "agents": {"type": "array", "items": obj({
        "name": {"type": "string", "minLength": 1, "pattern": "^[^:\\s]+$"},
        "key_sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        "limits": limits,
        "hosts": obj({"allow": STRLIST, "deny": STRLIST}),
    }, required=["name", "key_sha256"])},
}, desc="The proxy's config (keys of config.example.yaml); the chart owns listen, admin, CA/store paths and secrets.")

probe = obj({"enabled": B, "initialDelaySeconds": I(0), "periodSeconds": I(1), "timeoutSeconds": I(1), "failureThreshold": I(1)})
startup = obj({"enabled": B, "periodSeconds": I(1), "timeoutSeconds": I(1), "failureThreshold": I(1)})
monitor = obj({"enabled": B, "interval": DUR, "scrapeTimeout": DUR, "labels": STRMAP})

seccomp = obj({"type": {"type": "string", "enum": ["RuntimeDefault", "Localhost", "Unconfined"]}, "localhostProfile": S})
caps = obj({"add": STRLIST, "drop": STRLIST})
selinux = obj({"level": S, "role": S, "type": S, "user": S})
pod_sc = obj({
    "runAsNonRoot": B, "runAsUser": I(0), "runAsGroup": I(0), "fsGroup": I(0),
    "fsGroupChangePolicy": {"type": "string", "enum": ["OnRootMismatch", "Always"]},
    "supplementalGroups": {"type": "array", "items": I(0)},
    "seccompProfile": seccomp, "seLinuxOptions": selinux,
    "sysctls": {"type": "array", "items": obj({"name": S, "value": S}, required=["name", "value"])},
}, desc="Pod securityContext (Kubernetes PodSecurityContext fields).")
ctr_sc = obj({
    "allowPrivilegeEscalation": B, "readOnlyRootFilesystem": B, "runAsNonRoot": B,
    "runAsUser": I(0), "runAsGroup": I(0), "privileged": B, "capabilities": caps,
    "seccompProfile": seccomp, "seLinuxOptions": selinux,
    "procMount": S,
}, desc="Container securityContext (Kubernetes SecurityContext fields).")

resources = obj({"requests": {"type": "object", "additionalProperties": QTY},
                 "limits": {"type": "object", "additionalProperties": QTY},
                 "claims": {"type": "array", "items": obj({"name": S, "request": S}, required=["name"])}})

value_from = obj({
    "secretKeyRef": obj({"name": S, "key": S, "optional": B}, required=["key"]),
    "configMapKeyRef": obj({"name": S, "key": S, "optional": B}, required=["key"]),
    "fieldRef": obj({"fieldPath": S, "apiVersion": S}, required=["fieldPath"]),
    "resourceFieldRef": obj({"resource": S, "containerName": S, "divisor": QTY}, required=["resource"]),
})
env_item = obj({"name": S, "value": S, "valueFrom": value_from}, required=["name"])
mount_item = obj({"name": S, "mountPath": S, "readOnly": B, "subPath": S, "subPathExpr": S,
                  "mountPropagation": S, "recursiveReadOnly": S}, required=["name", "mountPath"])
volume_item = {"type": "object", "required": ["name"], "properties": {"name": S},
               "additionalProperties": {"type": "object"},
               "description": "A Kubernetes Volume: its name and one volume source object (secret, configMap, ...)."}
toleration = obj({"key": S, "operator": {"type": "string", "enum": ["Exists", "Equal"]}, "value": S,
                  "effect": {"type": "string", "enum": ["", "NoSchedule", "PreferNoSchedule", "NoExecute"]},
                  "tolerationSeconds": {"type": "integer"}})
affinity = obj({"nodeAffinity": {"type": "object"}, "podAffinity": {"type": "object"}, "podAntiAffinity": {"type": "object"}})

schema = obj({
    "global": {"type": "object", "description": "Helm's global values (parent charts)."},
    "mode": {"type": "string", "enum": ["gateway", "sidecar"]},
    "image": obj({"repository": {"type": "string", "minLength": 1}, "tag": S,
                  "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}}),
    "imagePullSecrets": {"type": "array", "items": obj({"name": S}, required=["name"])},
    "nameOverride": S, "fullnameOverride": S,
    "replicaCount": {"type": "integer", "minimum": 0,
                     "description": "Gateway replicas. SQLite (a per-pod ledger): 0 or 1. PostgreSQL: any; more than 1 needs ca.existingSecret."},
    "logFormat": {"type": "string", "enum": ["json", "text"]},
    "logLevel": {"type": "string", "minLength": 1},
    "config": config,
    "secrets": obj({"existingSecret": S, "keys": obj({k: S for k in (
        "adminToken", "lnbitsAdminKey", "lndMacaroon", "lndTlsCert", "clnRune", "clnTlsCert", "nwcUri")})}),
    "ca": obj({"existingSecret": S, "certKey": {"type": "string", "minLength": 1}, "keyKey": {"type": "string", "minLength": 1}}),
    "service": obj({"type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "proxyPort": I(1, maximum=65535), "adminPort": I(1, maximum=65535), "annotations": STRMAP}),
    "metrics": obj({"enabled": B, "serviceMonitor": monitor, "podMonitor": monitor}),
    "store": obj({
        "backend": {"type": "string", "enum": ["", "sqlite", "postgres"],
                    "description": "The ledger: sqlite (per pod) or postgres (shared by every replica and sidecar); \"\" = gateway: sqlite, sidecar: postgres."},
        "postgres": obj({
            "existingSecret": {"type": "string", "description": "Secret holding the database URL (postgres://user:password@host:5432/db); required with postgres."},
            "urlKey": {"type": "string", "minLength": 1},
            "tls": {"type": "string", "enum": ["", "verify-full", "verify-ca", "require", "prefer", "disable"],
                    "description": "libpq's sslmode; \"\" = the URL's sslmode, else verify-full."},
            "ca": obj({"existingSecret": S, "key": {"type": "string", "minLength": 1}},
                      desc="Optional: a Secret holding the PEM CA of the database's certificate."),
            "poolSize": I(0, maximum=256, description="Connections per proxy process; 0 = the proxy's default."),
        }),
    }, desc="Where the ledger (budgets, payments, tokens) lives."),
    "podDisruptionBudget": obj({"enabled": B, "maxUnavailable": {"type": ["integer", "string"], "pattern": "^([1-9][0-9]?|100)%$", "minimum": 1}},
                               desc="Gateway with more than one replica (PostgreSQL): a PodDisruptionBudget."),
    "persistence": obj({"enabled": B, "existingClaim": S, "storageClass": S,
                        "accessModes": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]}},
                        "size": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"},
                        "annotations": STRMAP}),
    "probes": obj({"liveness": probe, "readiness": probe, "startup": startup}),
    "resources": resources,
    "podSecurityContext": pod_sc,
    "securityContext": ctr_sc,
    "terminationGracePeriodSeconds": I(0),
    "serviceAccount": obj({"create": B, "name": S, "annotations": STRMAP, "automountServiceAccountToken": B}),
    "podAnnotations": STRMAP, "podLabels": STRMAP, "nodeSelector": STRMAP,
    "tolerations": {"type": "array", "items": toleration},
    "affinity": affinity,
    "priorityClassName": S,
    "extraEnv": {"type": "array", "items": env_item},
    "extraVolumes": {"type": "array", "items": volume_item},
    "extraVolumeMounts": {"type": "array", "items": mount_item},
    "sidecar": obj({
        "agentName": {"type": "string", "minLength": 1, "pattern": "^[^:@/\\s]+$"},
        "agentContainer": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "agentKeySecret": obj({"name": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}}),
        "exampleAgent": obj({"enabled": B, "image": {"type": "string", "minLength": 1}, "url": URL, "intervalSeconds": I(1)}),
    }),
}, required=["mode", "image", "config"])

# Cross-field rules (helm runs the schema before the templates, whose `fail`s say the same in
# longer words: templates/_helpers.tpl "l402-proxy.validate").
GATEWAY_REPLICAS = {"required": ["replicaCount"], "properties": {
    "mode": {"not": {"const": "sidecar"}}, "replicaCount": {"minimum": 2}}}
POSTGRES = {"anyOf": [
    {"required": ["store"], "properties": {"store": {"required": ["backend"], "properties": {"backend": {"const": "postgres"}}}}},
    {"required": ["mode"], "properties": {"mode": {"const": "sidecar"},
                                          "store": {"properties": {"backend": {"const": ""}}}}},
]}
schema["allOf"] = [
    {"$comment": "A gateway on SQLite (store.backend sqlite, or \"\": the gateway's default) runs at most one replica: the ledger is per pod.",
     "if": {"properties": {"mode": {"not": {"const": "sidecar"}},
                           "store": {"properties": {"backend": {"not": {"const": "postgres"}}}}}},
     "then": {"properties": {"replicaCount": {"maximum": 1}}}},
    {"$comment": "replicaCount > 1: every replica signs with ONE CA that agents trust, from ca.existingSecret.",
     "if": GATEWAY_REPLICAS,
     "then": {"required": ["ca"], "properties": {"ca": {"required": ["existingSecret"], "properties": {
         "existingSecret": {"minLength": 1}}}}}},
    {"$comment": "The PostgreSQL URL comes only from an existing Secret.",
     "if": POSTGRES,
     "then": {"required": ["store"], "properties": {"store": {"required": ["postgres"], "properties": {"postgres": {
         "required": ["existingSecret"], "properties": {"existingSecret": {"minLength": 1}}}}}}}},
]
schema = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "l402-proxy chart values", **schema}
print(json.dumps(schema, indent=2))
