#!/usr/bin/env python3
"""Validates `helm template` output against the Kubernetes API's own OpenAPI schemas, in strict
mode (an unknown field is an error), with PyPI kubernetes-validate (called by deploy/check.sh).

usage: kube_validate.py KUBE-VERSION[,KUBE-VERSION...] RENDERED.yaml...

- Every rendered object of a built-in API group is validated as is.
- The sidecar snippet (ConfigMap *-sidecar, data deployment-patch.yaml) is not an object but a
  strategic-merge patch: it is applied, the way `kubectl patch --type strategic` merges it, to a
  minimal agent Deployment (one container named after the patch's agent container), and the
  resulting Deployment is validated.
- Objects of CRD groups (monitoring.coreos.com: ServiceMonitor, PodMonitor) have no schema in
  kubernetes-validate; check_manifests.py checks their fields.
"""
import copy
import sys

import yaml
import kubernetes_validate

CRD_GROUPS = ("monitoring.coreos.com/",)
# Lists that a strategic-merge patch merges by "name" (the patch keys of the PodSpec we use).
MERGE_BY_NAME = {"containers", "initContainers", "volumes", "env", "volumeMounts", "ports"}


def strategic_merge(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = strategic_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if key in MERGE_BY_NAME and isinstance(base, list) and isinstance(patch, list):
        out = [copy.deepcopy(b) for b in base]
        index = {b["name"]: i for i, b in enumerate(out)}
        for item in patch:
            if item["name"] in index:
                out[index[item["name"]]] = strategic_merge(out[index[item["name"]]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def patched_agent(snippet_cm):
    patch = yaml.safe_load(snippet_cm["data"]["deployment-patch.yaml"])
    agent_name = patch["spec"]["template"]["spec"]["containers"][0]["name"]
    labels = {"app": "my-agent"}
    base = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "my-agent", "namespace": "agents"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": agent_name, "image": "registry.example.com/my-agent:1"}]},
            },
        },
    }
    merged = strategic_merge(base, patch)
    pod = merged["spec"]["template"]["spec"]
    # The patch must not leave the agent container without what it had, nor add a second one.
    assert [c["name"] for c in pod["containers"]] == [agent_name], pod["containers"]
    assert pod["containers"][0]["image"] == "registry.example.com/my-agent:1"
    return merged


def main():
    versions = sys.argv[1].split(",")
    failures = 0
    for path in sys.argv[2:]:
        objects = []
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue
            objects.append((f"{doc['kind']}/{doc['metadata']['name']}", doc))
            if doc["kind"] == "ConfigMap" and "deployment-patch.yaml" in doc.get("data", {}):
                objects.append((f"{doc['kind']}/{doc['metadata']['name']} patch applied to a Deployment",
                                patched_agent(doc)))
        before = failures
        for version in versions:
            for what, obj in objects:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    failures += 1
                    where = ".".join(str(p) for p in e.path)
                    print(f"{path}: {what}: Kubernetes {version} (strict): {where}: {e.message}", file=sys.stderr)
                except kubernetes_validate.SchemaNotFoundError as e:
                    failures += 1
                    print(f"{path}: {what}: {e.message}", file=sys.stderr)
        print(f"   {path.rsplit('/', 1)[-1]}: {len(objects)} objects valid for Kubernetes {', '.join(versions)} (strict)"
              if failures == before else f"   {path}: {failures - before} problem(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
