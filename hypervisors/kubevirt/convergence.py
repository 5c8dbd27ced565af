"""KubeVirt's part of the convergence check (convergence/analysis.py): its rule, the CRDs a host cluster has, its namespaces."""

from __future__ import annotations

from typing import Any

import yaml

from config.models import StackConfig
from hypervisors.kubevirt.render import preexisting_namespaces

PRESENT_CRDS = ("kubevirt.io/VirtualMachine", "kubevirt.io/KubeVirt")
"""A KubeVirt host cluster runs KubeVirt (v1.9.0, a prerequisite: README, docs/OPERATIONS.md); the plan's VirtualMachines
and the KubeVirt CR patch go to that cluster, through its own provider."""


def get(obj: Any, path: str, default: Any = None) -> Any:
    """obj["a"]["b"] for path "a.b", else default (convergence/analysis.py get)."""
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return default
        obj = obj[part]
    return obj


def declared_namespaces(cfg: StackConfig) -> tuple[set[str], dict[str, str]]:
    """(host-cluster namespaces the config declares to exist, namespace -> the key that decides whether the plan creates it)."""
    keys: dict[str, str] = {}
    for hi, h in enumerate(cfg.hosts):
        if h.kind == "kubevirt" and h.kubevirt is not None:
            keys.setdefault(h.kubevirt.namespace, f"hosts[{hi}].kubevirt.createNamespace")
    return set(preexisting_namespaces(list(cfg.hosts))), keys


def rule_kubevirt(c) -> list[tuple[str, str, str]]:
    """KubeVirt VMs (on the host cluster): every resource a VM requests is permitted by the KubeVirt CR patch
    (when gpu-stack manages it) and will be advertised on the node the VM is bound to (host facts).

    `c` is convergence/analysis.py's Cluster (files, cfg); each row is (object, key, message) of a violation of this rule."""
    out: list[tuple[str, str, str]] = []
    patch = yaml.safe_load(c.files.get("kubevirt/kubevirt-cr-patch.yaml", "null")) or {}
    conf = get(patch, "spec.configuration", {}) or {}
    permitted = {d.get("resourceName") for d in get(conf, "permittedHostDevices.pciHostDevices", []) or []}
    gates = set(get(conf, "developerConfiguration.featureGates", []) or [])
    allocatable = yaml.safe_load(c.files.get("kubevirt/expected-allocatable.yaml", "null")) or {}
    hosts = {h.name: (hi, h) for hi, h in enumerate(c.cfg.hosts)}
    index = {vm.name: (vi, vm) for vi, vm in enumerate(c.cfg.vms)}
    asked: dict[tuple[str, str], list[tuple[int, str, int]]] = {}
    for path, text in sorted(c.files.items()):
        if not (path.startswith("vms/") and path.endswith("/virtualmachine.yaml")):
            continue
        vm_doc = yaml.safe_load(text)
        name = get(vm_doc, "metadata.name")
        if name not in index:
            continue
        vi, vm = index[name]
        hi, host = hosts[vm.host]
        what = f"VirtualMachine {get(vm_doc, 'metadata.namespace')}/{name}"
        template = get(vm_doc, "spec.template", {}) or {}
        devices = get(template, "spec.domain.devices", {}) or {}
        node = get(template, "spec.nodeSelector", {}).get("kubernetes.io/hostname") or ",".join(
            f"{k}={v}" for k, v in sorted((get(template, "spec.nodeSelector", {}) or {}).items()))
        managed = host.kubevirt is not None and host.kubevirt.manage_kubevirt_config
        for kind, field_ in (("gpus", "gpus"), ("nvswitches", "hostDevices")):
            counts: dict[str, int] = {}
            for d in devices.get(field_, []) or []:
                counts[d.get("deviceName")] = counts.get(d.get("deviceName"), 0) + 1
            for resource, n in sorted(counts.items()):
                if managed and resource not in permitted:
                    out.append((what, f"hosts[{hi}].kubevirt.devicePlugins",
                                         f"requests {resource}, which the KubeVirt CR patch does not permit (permittedHostDevices.pciHostDevices)"))
                asked.setdefault((node, resource), []).append((vi, kind, n))
        if managed and devices.get("hostDevices") and "HostDevices" not in gates:
            out.append((what, f"hosts[{hi}].kubevirt.featureGates", "uses hostDevices, but the KubeVirt CR patch does not enable the HostDevices feature gate"))
        if managed and "hooks.kubevirt.io/hookSidecars" in (get(template, "metadata.annotations", {}) or {}) and "Sidecar" not in gates:
            out.append((what, f"hosts[{hi}].kubevirt.featureGates", "uses a hook sidecar (pcihole64), but the KubeVirt CR patch does not enable the Sidecar feature gate"))
    for (node, resource), rows in sorted(asked.items()):
        if node not in allocatable:
            continue  # no host facts for this node: the plan says capacity is unchecked
        have = int((allocatable[node] or {}).get(resource, 0))
        total = sum(n for _, _, n in rows)
        if total > have:
            vi, kind, _ = rows[-1]
            out.append((f"Node {node}", f"vms[{vi}].{kind}",
                                 f"VMs bound to this node request {total} {resource}; it will advertise {have} (one per IOMMU group, host facts)"))
    return out
