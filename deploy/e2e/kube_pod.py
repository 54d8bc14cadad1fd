"""Turns a `helm template` of the l402-proxy chart into what `podman kube play` runs (deploy/e2e.sh).

    python3 kube_pod.py MODE RENDERED.yaml OUT.yaml PROBES.json PROXY_IMAGE AGENT_IMAGE SECRETS_DIR

PROBES.json: {"probes": [{container, probe, path, port}], "empty_dirs": [mount path]}.
MODE is `sidecar` (the example-agent Deployment: the chart's sidecar snippet in an agent pod) or
`gateway` (the proxy's Deployment). The proxy container keeps the chart's image, args, env,
security context and volumes (ConfigMap, Secret, emptyDirs, the PVC) exactly as rendered. What
is added or changed, and why:

- the Secrets the chart expects the operator to bring (the admin token; the agent's key for the
  sidecar's agent container), with public demo values, written to SECRETS_DIR/NAME.json for
  `podman secret create NAME FILE`: podman 4.3 reads a pod's Secrets from its own store, and in
  two shapes: a Secret volume's as a Secret object whose `data` values it writes to the files
  as they are (not base64-decoded: so they are given plain), a secretKeyRef's as a flat
  {key: base64 value} object (each Secret here is used one way only); and a Secret volume needs
  `optional` set (podman 4.3 dereferences it unconditionally: a nil pointer panic otherwise),
  false as Kubernetes defaults;
- a demo seller (`l402-proxy seller`, plain HTTP on :8080) in the pod, named `seller.demo.svc`
  by a hostAlias for 127.0.0.1 (agents send it through the proxy: NO_PROXY is only for
  localhost/127.0.0.1);
- gateway: an agent container (curl) using the proxy at 127.0.0.1:8402;
- probes are removed from the pod and written to PROBES.json instead: podman 4.3 turns httpGet probes into `curl` healthchecks run inside the proxy's image
  (which has no curl) and runs them from systemd timers (none here); deploy/e2e.sh GETs each
  probe's endpoint itself, from inside the pod;
- `$(VAR)` references in env values are expanded here the Kubernetes way (earlier variables of
  the same container, a Secret's value included; `$$` is a literal `$`): podman 4.3 passes them
  through verbatim;
- the disk emptyDirs must be made mode 0777 before the pod starts, as Kubernetes creates them:
  podman 4.3 creates them owned by root, 0755, unless the image has the mount point (then it
  copies that directory's owner), so the non-root proxy could not write the agents' CA volume.
  Their mount paths in the proxy container are in PROBES.json too (deploy/e2e.sh plays the pod
  with --start=false, chmods those volumes, then starts it);
- sidecar: the native sidecar (an init container with restartPolicy: Always) becomes the first
  ordinary container: podman 4.3 runs init containers to completion before the others.

Objects podman does not run (Service, ServiceAccount, PodMonitor, ServiceMonitor, PDB) are left
out.
"""

import base64
import json
import os
import sys

import yaml

ADMIN_TOKEN = "e2e-demo-admin-token"
AGENT_KEY = "research-demo-key-change-me"  # sha256 in deploy/e2e/kube-values.yaml
SELLER_HOST = "seller.demo.svc"
PLAYED = {"ConfigMap", "PersistentVolumeClaim", "Deployment"}


def fail(msg):
    sys.exit(f"kube_pod.py: {msg}")


def b64(data):
    return {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}


def expand(value, known):
    """Kubernetes' dependent environment variables: $(NAME) of an earlier variable is replaced,
    $$ is a literal $, anything else stays as written."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i + 2:]:
            end = value.index(")", i + 2)
            name = value[i + 2:end]
            out.append(known.get(name, value[i:end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def expand_env(container, secrets):
    known = {}
    for e in container.get("env", []):
        if "value" in e:
            e["value"] = known[e["name"]] = expand(str(e["value"]), known)
        else:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] in secrets:
                known[e["name"]] = secrets[ref["name"]].get(ref["key"], "")


def port_number(container, port):
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    fail(f"container {container['name']}: probe port {port!r} is not one of its ports")


def take_probes(container, probes):
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.pop(kind, None)
        if probe is None:
            continue
        get = probe.get("httpGet") or fail(f"{container['name']}.{kind}: not an httpGet probe")
        probes.append({
            "container": container["name"],
            "probe": kind,
            "path": get["path"],
            "port": port_number(container, get["port"]),
        })


def main():
    mode, rendered, out, probes_out, proxy_image, agent_image, secrets_dir = sys.argv[1:8]
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    kept = [d for d in docs if d["kind"] in PLAYED]
    deployments = [d for d in kept if d["kind"] == "Deployment"]
    if mode == "sidecar":
        deployments = [d for d in deployments if d["metadata"]["name"].endswith("-example-agent")]
    elif mode != "gateway":
        fail(f"MODE must be sidecar or gateway, not {mode!r}")
    if len(deployments) != 1:
        fail(f"{mode}: expected one Deployment to play, found {len(deployments)}")
    dep = deployments[0]
    kept = [d for d in kept if d["kind"] != "Deployment"] + [dep]
    pod = dep["spec"]["template"]["spec"]

    probes = []
    secrets = {}  # name -> {key: value}
    volume_secrets = set()
    if mode == "sidecar":
        sidecars = [c for c in pod.get("initContainers", []) if c.get("restartPolicy") == "Always"]
        if len(sidecars) != 1:
            fail(f"sidecar: expected one native sidecar init container, found {len(sidecars)}")
        proxy = sidecars[0]
        pod["initContainers"] = [c for c in pod["initContainers"] if c is not proxy]
        if not pod["initContainers"]:
            del pod["initContainers"]
        del proxy["restartPolicy"]
        pod["containers"].insert(0, proxy)
    else:
        proxy = pod["containers"][0]
    if proxy["image"] != proxy_image:
        fail(f"the proxy container runs {proxy['image']!r}, not the image under test {proxy_image!r}")
    for c in pod["containers"]:
        take_probes(c, probes)

    # The Secrets the chart mounts or references (Secret volumes, secretKeyRef).
    for v in pod.get("volumes", []):
        if "secret" in v:
            items = v["secret"].get("items") or fail(f"secret volume {v['name']} projects no items")
            for it in items:
                if it["key"] != "admin-token":
                    fail(f"secret volume {v['name']}: unexpected key {it['key']} (dev wallet: admin token only)")
            v["secret"].setdefault("optional", False)
            volume_secrets.add(v["secret"]["secretName"])
            secrets.setdefault(v["secret"]["secretName"], {})["admin-token"] = ADMIN_TOKEN
    for c in pod["containers"]:
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                if ref["name"] in volume_secrets:
                    fail(f"Secret {ref['name']} is both a volume and a secretKeyRef: podman 4.3 reads those differently")
                secrets.setdefault(ref["name"], {})[ref["key"]] = AGENT_KEY

    for c in pod["containers"]:
        expand_env(c, secrets)

    empty_dirs = {v["name"] for v in pod.get("volumes", [])
                  if "emptyDir" in v and (v["emptyDir"] or {}).get("medium") != "Memory"}
    empty_dir_paths = [m["mountPath"] for m in proxy.get("volumeMounts", []) if m["name"] in empty_dirs]

    pod.setdefault("hostAliases", []).append({"ip": "127.0.0.1", "hostnames": [SELLER_HOST]})
    pod["containers"].append({
        "name": "seller",
        "image": proxy_image,
        "imagePullPolicy": "Never",
        "args": ["seller", "--listen", "0.0.0.0:8080", "--price-sats", "10"],
    })
    if mode == "gateway":
        pod["containers"].append({
            "name": "agent",
            "image": agent_image,
            "imagePullPolicy": "Never",
            "command": ["/bin/sh", "-c"],
            "args": [
                "while true; do curl -sS -i --max-time 60 \"$AGENT_URL\" | head -n 20; sleep 5; done"
            ],
            "env": [
                {"name": "AGENT_URL", "value": f"http://{SELLER_HOST}:8080/weather/today"},
                {"name": "HTTP_PROXY", "value": f"http://research:{AGENT_KEY}@127.0.0.1:8402"},
                {"name": "http_proxy", "value": f"http://research:{AGENT_KEY}@127.0.0.1:8402"},
                {"name": "NO_PROXY", "value": "localhost,127.0.0.1"},
            ],
        })
    if not secrets:
        fail("no Secret referenced: the chart's credentials are not mounted")
    os.makedirs(secrets_dir, exist_ok=True)
    for name, data in sorted(secrets.items()):
        with open(os.path.join(secrets_dir, name + ".json"), "w") as f:
            if name in volume_secrets:
                json.dump({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data}, f)
            else:
                json.dump(b64(data), f)
    with open(out, "w") as f:
        yaml.safe_dump_all(kept, f, sort_keys=False)
    with open(probes_out, "w") as f:
        json.dump({"probes": probes, "empty_dirs": empty_dir_paths}, f)


if __name__ == "__main__":
    main()
