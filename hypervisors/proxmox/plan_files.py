"""What `make plan` writes for a Proxmox VM (tools/plan.py asks every backend through HYPERVISORS).

vms/<vm>/proxmox.json: the VmLegacy's inputs as the program sent them (secrets as the engine marks them;
tools/plan.py writes them "[secret]"), kvmArguments split into its raw QEMU arguments each with the reason
it is set (render.py KVM_ARGUMENT_REASONS), and the snippets it boots with; vms/<vm>/cloud-init.meta-data.
"""

from __future__ import annotations

import shlex
from typing import Any

from hypervisors.proxmox.render import KVM_ARGUMENT_REASONS
from hypervisors.shared import PlanSummary

VM_LEGACY = "proxmoxve:index/vmLegacy:VmLegacy"
FILE_LEGACY = "proxmoxve:index/fileLegacy:FileLegacy"
PROVIDER = "pulumi:providers:proxmoxve"


def kvm_argument_rows(text: Any) -> Any:
    """`-flag value` pairs of PVE `args`, each with its reason; a value that is not plain text (unknown, secret) as it is."""
    if not isinstance(text, str):
        return text
    words = shlex.split(text)
    rows = []
    for flag, value in zip(words[::2], words[1::2]):
        argument = f"{flag} {value}"
        reason = next((why for key, why in KVM_ARGUMENT_REASONS.items() if argument.startswith(key)), "")
        rows.append({"argument": argument, "reason": reason})
    assert len(words) % 2 == 0 and all(r["reason"] for r in rows), text
    return rows


def plan_files(resources: list, outputs: dict[str, Any]) -> dict[str, Any]:
    """resources: what the program registered (type, name, inputs, parent). Relative path -> document (JSON-able) or text."""
    out: dict[str, Any] = {}
    for vm in (r for r in resources if r.type == VM_LEGACY):
        name = vm.inputs["name"]
        doc = dict(vm.inputs)
        if "kvmArguments" in doc:
            doc["kvmArguments"] = kvm_argument_rows(doc["kvmArguments"])
        snippets = {}
        for f in (r for r in resources if r.type == FILE_LEGACY and r.parent == vm.parent):
            raw = f.inputs.get("sourceRaw")  # the user-data's is a secret as a whole (its data holds the SSH host key)
            snippets[f.name] = {"datastoreId": f.inputs.get("datastoreId"), "contentType": f.inputs.get("contentType"), "sourceRaw": raw}
            if isinstance(raw, dict) and isinstance(raw.get("data"), str) and str(raw.get("fileName", "")).endswith("-meta-data.yaml"):
                out[f"vms/{name}/cloud-init.meta-data"] = raw["data"]
        doc["snippets"] = snippets
        out[f"vms/{name}/proxmox.json"] = doc
    return out


def plan_summary(resources: list, outputs: dict[str, Any], facts: dict[str, str]) -> PlanSummary:
    """No line of its own per VM (the neutral one: its resources' types); each node checked against its facts file
    (hypervisors/proxmox/host-facts.sh), or, without one, the release and devices assumed offline."""
    hosts = sorted(r.name.removeprefix("proxmox-") for r in resources if r.type == PROVIDER)  # preflight.py proxmox_provider
    lines = [f"  host {host}: Proxmox VE release, IOMMU groups, BARs, NUMA and address bits checked against {facts[host]}"
             for host in hosts if host in facts]
    assumed = "Proxmox VE release and PCI devices assumed as configured, each in its own IOMMU group"
    return PlanSummary(lines=lines, notes=[assumed] if any(h not in facts for h in hosts) else [])
