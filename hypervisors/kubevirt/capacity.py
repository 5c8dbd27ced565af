"""Seed 002 at preview: what a KubeVirt node will advertise, from its host facts.

KubeVirt's device plugin (pkg/virt-handler/device-manager/pci_device.go at v1.8.4 and v1.9.0,
constructDPIdevices) uses a device's IOMMU group as its device-plugin ID, so a
node advertises one device per IOMMU group per resource: six RTX 3090s of
which two pairs share a group are four allocatable nvidia.com/RTX_3090. Here
the facts of the node (facts/host_facts.py format) give the groups; the VMs
bound to the node must not ask for more than that.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from config.catalog import device_model
from facts.host_facts import HostFacts
from hypervisors.kubevirt.render import advertised_models
from config.models import StackConfig
from config.errors import ConfigIssue


@dataclass(frozen=True)
class Advertised:
    resource: str
    model: str
    devices: tuple[str, ...]
    """Matching functions bound to vfio-pci on the node."""
    groups: dict[int, tuple[str, ...]]
    """IOMMU group -> its matching functions."""

    @property
    def count(self) -> int:
        return len(self.groups)

    @property
    def shared(self) -> dict[int, tuple[str, ...]]:
        return {g: devs for g, devs in self.groups.items() if len(devs) > 1}


def _ids(model: str) -> set[tuple[int, int]]:
    m = device_model(model)
    return {(int(v, 16), int(d, 16)) for v, d in (p.split(":") for p in m.pci_ids)}


def advertised(facts: HostFacts, model: str) -> Advertised:
    ids = _ids(model)
    groups: dict[int, list[str]] = defaultdict(list)
    devices = []
    for address, dev in sorted(facts.devices.items()):
        node = dev.node
        if (node.vendor_id, node.product_id) in ids and (dev.driver in (None, "vfio-pci")):
            groups[node.iommu_group].append(address)
            devices.append(address)
    model_ = device_model(model)
    return Advertised(model_.resource, model, tuple(devices), {g: tuple(v) for g, v in sorted(groups.items())})


def node_of(host) -> str:
    kv = host.kubevirt
    return kv.node_name or ",".join(f"{k}={v}" for k, v in sorted(kv.node_selector.items()))


def expected_allocatable(cfg: StackConfig, facts: dict[str, HostFacts]) -> dict[str, dict[str, int]]:
    """node -> resource -> devices KubeVirt's plugin will advertise, for KubeVirt hosts with facts."""
    out: dict[str, dict[str, int]] = {}
    for host in cfg.hosts:
        if host.kind != "kubevirt" or host.kubevirt is None or host.name not in facts:
            continue
        ours, _ = advertised_models(cfg, host)
        out[node_of(host)] = {advertised(facts[host.name], m).resource: advertised(facts[host.name], m).count for m in ours}
    return out


def unchecked_hosts(cfg: StackConfig, facts: dict[str, HostFacts]) -> list[str]:
    return [h.name for h in cfg.hosts if h.kind == "kubevirt" and h.name not in facts and any(vm.host == h.name for vm in cfg.vms)]


def check_capacity(cfg: StackConfig, facts: dict[str, HostFacts]) -> list[ConfigIssue]:
    """VMs on a KubeVirt node asking for more of a resource than KubeVirt's plugin will advertise there."""
    issues: list[ConfigIssue] = []
    for hi, host in enumerate(cfg.hosts):
        if host.kind != "kubevirt" or host.kubevirt is None or host.name not in facts:
            continue
        f = facts[host.name]
        ours, _ = advertised_models(cfg, host)
        vms = [(vi, vm) for vi, vm in enumerate(cfg.vms) if vm.host == host.name]
        for vi, vm in vms:
            for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches)):
                for di, d in enumerate(devs):
                    if d.address not in f.devices:
                        issues.append(ConfigIssue(f"vms[{vi}].{kind}[{di}].address", f"{d.address} is not in host facts {f.source} (node {node_of(host)}); on KubeVirt the device plugin "
                                                                                      "picks the device, but the address must name one on the node: "
                                                                                      f"rerun scripts/host-facts.sh --host {host.name} with every "
                                                                                      "configured address"))
        for model in ours:
            adv = advertised(f, model)
            asks = [(vi, vm, kind, sum(1 for d in devs if d.model == model))
                    for vi, vm in vms for kind, devs in (("gpus", vm.gpus), ("nvswitches", vm.nvswitches))]
            asks = [a for a in asks if a[3]]
            total = sum(a[3] for a in asks)
            if total <= adv.count:
                continue
            vi, vm, kind, n = asks[-1]
            who = " + ".join(f"{v.name} {k_n}" for _, v, _, k_n in asks)
            shared = "; ".join(f"group {g}: {', '.join(devs)}" for g, devs in adv.shared.items()) or "none"
            issues.append(ConfigIssue(
                f"vms[{vi}].{kind}",
                f"node {node_of(host)} (host {host.name}) will advertise {adv.count} {adv.resource}, but its VMs ask for {total} ({who}): "
                f"host facts {f.source} record {len(adv.devices)} {model} bound to vfio-pci in {adv.count} IOMMU groups, and KubeVirt's device plugin "
                f"advertises one device per IOMMU group (seed 002). Groups with more than one device: {shared}. Fixes: enable ACS in the BIOS "
                f"(PCIe ACS / 'ACS Control') so each GPU gets its own group, then rerun scripts/host-facts.sh; or give one VM the whole group, "
                f"which KubeVirt's plugin cannot do (it hands out one PCI address per group), so through a libvirt host; or ask for at most {adv.count}"))
    return issues
