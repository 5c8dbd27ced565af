"""What `make plan` writes and says for a KubeVirt VM (tools/plan.py asks every backend through HYPERVISORS).

vms/<vm>/virtualmachine.yaml and what goes with it (secret-cloudinit.yaml, configmap-pcihole64.yaml,
service-ssh.yaml); kubevirt/kubevirt-cr-patch.yaml, the VMs' Namespace and kubevirt/expected-allocatable.yaml.
Documents are returned as the program sent them; tools/plan.py writes secrets as "[secret]".
"""

from __future__ import annotations

from typing import Any

from hypervisors.shared import PlanSummary

VIRTUAL_MACHINE = "kubernetes:kubevirt.io/v1:VirtualMachine"
KUBEVIRT_PATCH = "kubernetes:kubevirt.io/v1:KubeVirtPatch"
SIBLINGS = {  # a VirtualMachine's sibling under GpuPassthroughVm -> its file, apiVersion and kind
    "kubernetes:core/v1:ConfigMap": ("configmap-pcihole64.yaml", "v1", "ConfigMap"),
    "kubernetes:core/v1:Service": ("service-ssh.yaml", "v1", "Service"),
    "kubernetes:core/v1:Secret": ("secret-cloudinit.yaml", "v1", "Secret"),
}
NAMESPACE = "kubernetes:core/v1:Namespace"


def k8s_object(r: Any, api_version: str, kind: str) -> dict:
    """The object a Kubernetes resource registers: its inputs under its apiVersion and kind."""
    doc = {k: v for k, v in r.inputs.items() if k not in ("apiVersion", "kind")}
    return {"apiVersion": api_version, "kind": kind, **doc}


def plan_files(resources: list, outputs: dict[str, Any]) -> dict[str, Any]:
    """resources: what the program registered (type, name, inputs, parent, provider); outputs: the stack's.
    Relative path -> document (written as YAML)."""
    out: dict[str, Any] = {}
    machines = [r for r in resources if r.type == VIRTUAL_MACHINE]
    patches = [r for r in resources if r.type == KUBEVIRT_PATCH]
    for machine in machines:
        name = machine.inputs["metadata"]["name"]
        out[f"vms/{name}/virtualmachine.yaml"] = machine.inputs
        for sibling in (r for r in resources if r.parent == machine.parent and r.type in SIBLINGS):
            fname, api_version, kind = SIBLINGS[sibling.type]
            out[f"vms/{name}/{fname}"] = k8s_object(sibling, api_version, kind)
    for patch in patches:
        out["kubevirt/kubevirt-cr-patch.yaml"] = patch.inputs
    host_clusters = {r.provider for r in (*machines, *patches)}
    for ns in (r for r in resources if r.type == NAMESPACE):
        if ns.provider in host_clusters:  # the VMs' namespace (hosts[].kubevirt.createNamespace)
            doc = k8s_object(ns, "v1", "Namespace")
            out[f"kubevirt/namespace-{doc['metadata']['name']}.yaml"] = doc
    allocatable = outputs.get("kubevirtExpectedAllocatable")
    if isinstance(allocatable, dict) and allocatable:
        out["kubevirt/expected-allocatable.yaml"] = allocatable
    return out


def plan_summary(resources: list, outputs: dict[str, Any], facts: dict[str, str]) -> PlanSummary:
    """Each VM's GPUs, host devices and vCPUs; each node's expected allocatable; the capacity check's word."""
    vms = {}
    for kv in (r for r in resources if r.type == VIRTUAL_MACHINE):
        kids = [r for r in resources if r.parent == kv.parent]
        template = kv.inputs["spec"]["template"]
        devices = template["spec"]["domain"]["devices"]
        hook = "hooks.kubevirt.io/hookSidecars" in (template.get("metadata") or {}).get("annotations", {})
        vms.setdefault(kv.parent, f"  vm {kv.parent} (kubevirt): {len(kids)} resources, {len(devices.get('gpus', []))} gpus + "
                                  f"{len(devices.get('hostDevices', []))} hostDevices, {int(template['spec']['domain']['cpu']['cores'])} vCPUs"
                                  + (", pcihole64 by hook sidecar" if hook else ""))
    lines = []
    allocatable = outputs.get("kubevirtExpectedAllocatable")
    if isinstance(allocatable, dict):
        for node, counts in sorted(allocatable.items()):
            lines.append(f"  kubevirt node {node}: expected allocatable " + ", ".join(f"{r}={n}" for r, n in sorted(counts.items()))
                         + " (one per IOMMU group, host facts)")
    notes = [f"KubeVirt capacity {outputs['kubevirtCapacity']}"] if isinstance(outputs.get("kubevirtCapacity"), str) else []
    return PlanSummary(vms, lines, notes)
