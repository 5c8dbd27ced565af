"""What `make plan` writes and says for a vSphere VM (tools/plan.py asks every backend through HYPERVISORS).

vms/<vm>/vsphere.json: the VirtualMachine's inputs for reviewers, extraConfig key by key with its reason
(render.py EXTRA_CONFIG_REASONS); vms/<vm>/cloud-init.meta-data, decoded from guestinfo.metadata.
"""

from __future__ import annotations

import base64
from typing import Any

from hypervisors.shared import PlanSummary, unwrap_secret
from hypervisors.vsphere.render import EXTRA_CONFIG_REASONS, SECRET_EXTRA_CONFIG

VIRTUAL_MACHINE = "vsphere:index/virtualMachine:VirtualMachine"
PROVIDER = "pulumi:providers:vsphere"


def vsphere_doc(machine: Any) -> dict[str, Any]:
    """The VirtualMachine's inputs, extraConfig key by key with its reason. extraConfig travels as one secret map
    (it holds the cloud-init user-data); here only its secret keys stay hidden ("[secret]")."""
    inputs = dict(machine.inputs)
    extra = unwrap_secret(inputs.pop("extraConfig", {})) or {}
    inputs["extraConfig"] = {
        key: {"value": "[secret]" if key in SECRET_EXTRA_CONFIG else value, "reason": EXTRA_CONFIG_REASONS.get(key, "")}
        for key, value in sorted(extra.items())
    }
    return inputs


def plan_files(resources: list, outputs: dict[str, Any]) -> dict[str, Any]:
    """resources: what the program registered (type, name, inputs, parent). Relative path -> document (JSON-able) or text."""
    out: dict[str, Any] = {}
    for machine in (r for r in resources if r.type == VIRTUAL_MACHINE):
        name = machine.inputs["name"]
        out[f"vms/{name}/vsphere.json"] = vsphere_doc(machine)
        meta = (unwrap_secret(machine.inputs.get("extraConfig")) or {}).get("guestinfo.metadata")
        if isinstance(meta, str):
            out[f"vms/{name}/cloud-init.meta-data"] = base64.b64decode(meta).decode()
    return out


def plan_summary(resources: list, outputs: dict[str, Any], facts: dict[str, str]) -> PlanSummary:
    """Each VM's PCI devices, vCPUs, memory and 64-bit MMIO size; the inventory is assumed offline."""
    vms = {}
    for machine in (r for r in resources if r.type == VIRTUAL_MACHINE):
        kids = [r for r in resources if r.parent == machine.parent]
        extra = unwrap_secret(machine.inputs.get("extraConfig")) or {}
        mmio = extra.get("pciPassthru.64bitMMIOSizeGB")
        vms.setdefault(machine.parent, f"  vm {machine.parent} (vsphere): {len(kids)} resources, {len(machine.inputs.get('pciDeviceIds', []))} "
                                       f"PCI devices, {int(machine.inputs['numCpus'])} vCPUs, {int(machine.inputs['memory']) // 1024} GiB"
                                       + (f", 64bitMMIOSizeGB {mmio}" if mmio else ""))
    notes = ["vSphere inventory and PCI devices assumed as configured"] if any(r.type == PROVIDER for r in resources) else []
    return PlanSummary(vms, [], notes)
