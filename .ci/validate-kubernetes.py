#!/usr/bin/env python3
"""Validates deploy/kubernetes/ offline, without a cluster.

1. kubernetes-validate (the Kubernetes JSON schemas, shipped in the package): every object of
   ucwa-agent.yaml, strict (no unknown field), against the oldest Kubernetes the manifest
   supports (1.28, the pod-index label) and the package's newest.
2. The Pod Security Standard "restricted" (and baseline) rules that concern a pod spec, checked
   here: kubectl cannot (`kubectl apply --dry-run=client` needs an API server).
3. What ties the files together: the Service is the StatefulSet's serviceName and selects its
   pods; the named port exists and is config.toml's metrics.listen port; the probes use it;
   SHARDS equals replicas; the image is not :latest; the ServiceMonitor selects the Service and
   scrapes its port.

`--self-test` also shows each check failing on broken copies (in a temporary folder).
Usage: python3 .ci/validate-kubernetes.py [--self-test]
"""

import copy
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MANIFEST = os.path.join(ROOT, "deploy", "kubernetes", "ucwa-agent.yaml")
SERVICE_MONITOR = os.path.join(ROOT, "deploy", "kubernetes", "servicemonitor.yaml")
KUBERNETES_VERSIONS = ["1.28.0", "1.37.0"]

# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}


def schema_errors(path):
    """kubernetes-validate's complaints about the file, for each Kubernetes version."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        r = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", "-k", version, path],
            capture_output=True, text=True,
        )
        if r.returncode != 0:
            errors.append(f"schema (Kubernetes {version}): {(r.stdout + r.stderr).strip()}")
    return errors


def by_kind(docs):
    return {d["kind"]: d for d in docs if d}


def pod_security_errors(pod):
    """Pod Security Standards, restricted profile (with baseline), for one pod spec."""
    errors = []
    psc = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            errors.append(f"baseline: {key} must be unset or false")
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            errors.append(f"restricted: volume {v['name']} is of a type not allowed: {sorted(kinds)}")
    containers = (pod.get("containers") or []) + (pod.get("initContainers") or [])
    for c in containers:
        name = c["name"]
        sc = c.get("securityContext") or {}

        def effective(key):
            return sc.get(key, psc.get(key))

        if sc.get("privileged"):
            errors.append(f"baseline: {name}: privileged")
        if effective("runAsNonRoot") is not True:
            errors.append(f"restricted: {name}: runAsNonRoot must be true (pod or container)")
        if effective("runAsUser") == 0:
            errors.append(f"restricted: {name}: runAsUser must not be 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"restricted: {name}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            errors.append(f"restricted: {name}: capabilities.drop must hold ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            errors.append(f"restricted: {name}: only NET_BIND_SERVICE may be added")
        seccomp = effective("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            errors.append(f"restricted: {name}: seccompProfile.type must be RuntimeDefault or Localhost")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                errors.append(f"baseline: {name}: hostPort")
        # Not in the standard, but this manifest promises it.
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{name}: readOnlyRootFilesystem must be true")
    return errors


def consistency_errors(objects, monitor):
    errors = []
    cm, svc, sts = objects.get("ConfigMap"), objects.get("Service"), objects.get("StatefulSet")
    if not (cm and svc and sts):
        return [f"expected a ConfigMap, a Service and a StatefulSet, got {sorted(objects)}"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    (container,) = pod["containers"]
    if spec.get("serviceName") != svc["metadata"]["name"]:
        errors.append(f"serviceName {spec.get('serviceName')!r} is not the Service {svc['metadata']['name']!r}")
    if svc["spec"].get("clusterIP") != "None":
        errors.append("the StatefulSet's governing Service must be headless (clusterIP: None)")
    selector = svc["spec"].get("selector") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        errors.append(f"the Service's selector {selector} does not select the pods {labels}")
    ports = {p.get("name"): p for p in container.get("ports") or []}
    listen = re.search(r'(?m)^\[metrics\]\s*(?:#.*\n|\s)*listen\s*=\s*"([^"]+)"', cm["data"]["config.toml"])
    if "metrics" not in ports:
        errors.append("the container has no port named metrics")
    elif not listen or not listen.group(1).endswith(f":{ports['metrics']['containerPort']}"):
        errors.append(f"config.toml's metrics.listen {listen and listen.group(1)!r} is not on the metrics port {ports['metrics']['containerPort']}")
    elif listen.group(1).split(":")[0] in ("127.0.0.1", "[::1]", "localhost"):
        errors.append(f"metrics.listen {listen.group(1)} is loopback: neither the kubelet nor Prometheus reaches it")
    svc_ports = [p for p in svc["spec"].get("ports") or [] if p.get("targetPort") in ("metrics", ports.get("metrics", {}).get("containerPort"))]
    if not svc_ports:
        errors.append("the Service exposes no port targeting the container's metrics port")
    for probe in ("readinessProbe", "livenessProbe"):
        p = container.get(probe)
        if not p:
            errors.append(f"no {probe}")
        elif (p.get("httpGet") or p.get("tcpSocket") or {}).get("port") not in ("metrics", ports.get("metrics", {}).get("containerPort")):
            errors.append(f"the {probe} does not ask the metrics port")
    if (container.get("readinessProbe") or {}).get("httpGet", {}).get("path") != "/healthz":
        errors.append("the readinessProbe must ask /healthz")
    env = {e["name"]: e for e in container.get("env") or []}
    if env.get("SHARDS", {}).get("value") != str(spec.get("replicas")):
        errors.append(f"SHARDS {env.get('SHARDS', {}).get('value')!r} is not replicas {spec.get('replicas')}")
    image = container["image"]
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        errors.append(f"image {image}: give a tag, not :latest")
    if monitor is not None:
        if monitor.get("kind") != "ServiceMonitor" or monitor.get("apiVersion") != "monitoring.coreos.com/v1":
            errors.append("servicemonitor.yaml: not a monitoring.coreos.com/v1 ServiceMonitor")
        else:
            want = monitor["spec"]["selector"].get("matchLabels") or {}
            have = svc["metadata"].get("labels") or {}
            if not want or any(have.get(k) != v for k, v in want.items()):
                errors.append(f"the ServiceMonitor's selector {want} does not select the Service (labels {have})")
            names = {p.get("name") for p in svc["spec"]["ports"]}
            for e in monitor["spec"]["endpoints"]:
                if e.get("port") not in names:
                    errors.append(f"the ServiceMonitor scrapes port {e.get('port')!r}; the Service has {sorted(names)}")
    errors += pod_security_errors(pod)
    return errors


def validate(manifest_path, monitor_path):
    with open(manifest_path) as f:
        objects = by_kind(yaml.safe_load_all(f))
    with open(monitor_path) as f:
        monitor = yaml.safe_load(f)
    return schema_errors(manifest_path) + consistency_errors(objects, monitor)


def self_test():
    """Each kind of check fails on a broken copy: the validation can fail."""
    with open(MANIFEST) as f:
        docs = list(yaml.safe_load_all(f))
    with open(SERVICE_MONITOR) as f:
        monitor = yaml.safe_load(f)

    def container(d):
        return by_kind(d)["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]

    def broken_port(d):
        container(d)["ports"][0]["containerPort"] = "9464"  # a string: the schema wants an integer

    def unknown_field(d):
        container(d)["livenessProbe"]["httpGett"] = {"path": "/metrics"}  # strict: no such field

    def escalation(d):
        del container(d)["securityContext"]["allowPrivilegeEscalation"]

    def root(d):
        by_kind(d)["StatefulSet"]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False

    def host_path(d):
        by_kind(d)["StatefulSet"]["spec"]["template"]["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})

    def shards(d):
        by_kind(d)["StatefulSet"]["spec"]["replicas"] = 4

    def loopback(d):
        cm = by_kind(d)["ConfigMap"]
        cm["data"]["config.toml"] = cm["data"]["config.toml"].replace("0.0.0.0:9464", "127.0.0.1:9464")

    def latest(d):
        container(d)["image"] = "ucwa-agent:latest"

    def monitor_port(d, m):
        m["spec"]["endpoints"][0]["port"] = "http"

    cases = [
        ("containerPort as a string", broken_port, None, "schema"),
        ("an unknown field", unknown_field, None, "schema"),
        ("allowPrivilegeEscalation unset", escalation, None, "allowPrivilegeEscalation"),
        ("runAsNonRoot false", root, None, "runAsNonRoot"),
        ("a hostPath volume", host_path, None, "hostPath"),
        ("replicas 4, SHARDS 3", shards, None, "SHARDS"),
        ("a loopback metrics.listen", loopback, None, "loopback"),
        ("image :latest", latest, None, ":latest"),
        ("the ServiceMonitor's port", None, monitor_port, "ServiceMonitor scrapes port"),
    ]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for title, break_manifest, break_monitor, expected in cases:
            d, m = copy.deepcopy(docs), copy.deepcopy(monitor)
            if break_manifest:
                break_manifest(d)
            if break_monitor:
                break_monitor(d, m)
            mp, sp = os.path.join(tmp, "ucwa-agent.yaml"), os.path.join(tmp, "servicemonitor.yaml")
            with open(mp, "w") as f:
                yaml.safe_dump_all(d, f)
            with open(sp, "w") as f:
                yaml.safe_dump(m, f)
            errors = validate(mp, sp)
            if any(expected in e for e in errors):
                print(f"ok: a broken copy is refused ({title}): {next(e for e in errors if expected in e)}")
            else:
                failed += 1
                print(f"FAIL: a broken copy passed ({title}); errors: {errors}")
    return failed


def main():
    errors = validate(MANIFEST, SERVICE_MONITOR)
    for e in errors:
        print(f"FAIL: {e}")
    if not errors:
        print(f"ok: {os.path.relpath(MANIFEST, ROOT)} and {os.path.relpath(SERVICE_MONITOR, ROOT)}: "
              f"schemas of Kubernetes {', '.join(KUBERNETES_VERSIONS)} (strict), Pod Security restricted, consistent")
    failed = len(errors)
    if "--self-test" in sys.argv:
        failed += self_test()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
