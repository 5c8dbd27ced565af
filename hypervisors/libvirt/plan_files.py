"""What `make plan` writes and says for a libvirt VM (tools/plan.py asks every backend through HYPERVISORS).

vms/<vm>/domain.xslt (the stylesheet the program sends), domain.pre-xslt.xml (the XML the provider builds
from the Domain's inputs, provider_xml.py), domain.xml (the stylesheet applied with lxml: libxslt, the library
xsltproc and libvirt's provider use) and cloud-init.meta-data.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from hypervisors.libvirt.provider_xml import VolumeRef, provider_domain_xml
from hypervisors.shared import PlanSummary

DOMAIN = "libvirt:index/domain:Domain"
VOLUME = "libvirt:index/volume:Volume"
CLOUDINIT_DISK = "libvirt:index/cloudInitDisk:CloudInitDisk"
PROVIDER = "pulumi:providers:libvirt"
CLOUDINIT_POOL_PATH = "/var/lib/libvirt/images"  # the host's pool path; the provider reads it at create time


def domain_files(resources: list, domain: Any) -> dict[str, str]:
    """The Domain's files (file name -> text), from it and its siblings (the volumes, the cloud-init disk)."""
    siblings = [r for r in resources if r.parent == domain.parent]
    inputs = dict(domain.inputs)
    volumes: dict[str, VolumeRef] = {}
    disks = []
    for i, vol in enumerate(r for r in siblings if r.type == VOLUME):
        key = f"volume-{i}"
        volumes[key] = VolumeRef(vol.inputs.get("pool", "default"), vol.inputs["name"], vol.inputs.get("format", "raw"))
        disks.append({"volumeId": key})
    inputs["disks"] = disks
    cloudinit = next((r for r in siblings if r.type == CLOUDINIT_DISK), None)
    paths = {}
    if cloudinit is not None:
        inputs["cloudinit"] = "cloudinit"
        paths["cloudinit"] = f"{CLOUDINIT_POOL_PATH}/{cloudinit.inputs['name']}"
    xslt = inputs["xml"]["xslt"]
    pre = provider_domain_xml(inputs, volumes, paths)
    transformed = etree.XSLT(etree.XML(xslt.encode()))(etree.XML(pre.encode()))
    files = {"domain.xslt": xslt, "domain.pre-xslt.xml": pre + "\n", "domain.xml": str(transformed)}
    if cloudinit is not None:
        files["cloud-init.meta-data"] = cloudinit.inputs.get("metaData", "")
    return files


def plan_files(resources: list, outputs: dict[str, Any]) -> dict[str, Any]:
    """resources: what the program registered (type, name, inputs, parent). Relative path -> text."""
    out: dict[str, Any] = {}
    for domain in (r for r in resources if r.type == DOMAIN):
        for fname, text in domain_files(resources, domain).items():
            out[f"vms/{domain.inputs['name']}/{fname}"] = text
    return out


def plan_summary(resources: list, outputs: dict[str, Any], facts: dict[str, str]) -> PlanSummary:
    """Each VM's hostdevs, vCPUs, memory and 64-bit hole; which hosts were checked against which facts file."""
    vms = {}
    for domain in (r for r in resources if r.type == DOMAIN):
        kids = [r for r in resources if r.parent == domain.parent]
        xslt = domain.inputs["xml"]["xslt"]
        hole = re.search(r"pci-hole64-size=(\d+G)", xslt)
        vms.setdefault(domain.parent, f"  vm {domain.parent}: {len(kids)} resources, {xslt.count('<hostdev ')} hostdevs, "
                                      f"{int(domain.inputs['vcpu'])} vCPUs, {int(domain.inputs['memory']) // 1024} GiB"
                                      + (f", hole64 {hole.group(1)}" if hole else ""))
    hosts = sorted(r.name.removeprefix("libvirt-") for r in resources if r.type == PROVIDER)
    lines = [f"  host {host}: IOMMU groups, BARs, NUMA and address bits checked against {facts[host]}" for host in hosts if host in facts]
    unchecked = [h for h in hosts if h not in facts]
    notes = [f"IOMMU groups assumed isolated on {', '.join(unchecked)}, no host facts"] if unchecked else []
    return PlanSummary(vms, lines, notes)
