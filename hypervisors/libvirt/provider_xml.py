"""The domain XML terraform-provider-libvirt v0.8.1 hands to `xsltproc`.

The provider builds this from the libvirt_domain arguments and never shows it;
our stylesheet is applied to it. Rebuilding it here, from the same inputs the
Domain resource receives, lets the plan and the tests run the real stylesheet
on the real input. tests/test_provider_xml.py pins this against
tests/reference/tf-libvirt-v0.8.1-base-domain.xml byte for byte.

Format (utils.go:xmlMarshallIndented): every line prefixed by two spaces,
four-space indent, `<x></x>` for empty elements, no declaration, no trailing
newline. Values the provider reads from the live host (canonical machine
name, the cloud-init ISO path, the pool of a volume) are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True)
class VolumeRef:
    pool: str
    name: str
    format: str  # qcow2 or raw


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def _attrs(self, attrs: dict[str, str]) -> str:
        return "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items())

    def leaf(self, tag: str, attrs: dict[str, str] | None = None, text: str = "") -> None:
        self.lines.append("  " + "    " * self.depth + f"<{tag}{self._attrs(attrs or {})}>{escape(text)}</{tag}>")

    def open(self, tag: str, attrs: dict[str, str] | None = None) -> None:
        self.lines.append("  " + "    " * self.depth + f"<{tag}{self._attrs(attrs or {})}>")
        self.depth += 1

    def close(self, tag: str) -> None:
        self.depth -= 1
        self.lines.append("  " + "    " * self.depth + f"</{tag}>")


def provider_domain_xml(
    domain: dict,
    volumes: dict[str, VolumeRef],
    cloudinit_paths: dict[str, str],
    machine_canonical: dict[str, str] | None = None,
) -> str:
    """Rebuild the pre-XSLT XML from a libvirt:index/domain:Domain's inputs (wire names)."""
    canonical = machine_canonical or {"q35": "pc-q35-7.2", "pc": "pc-i440fx-7.2"}
    w = _Writer()
    w.open("domain", {"type": domain.get("type") or "kvm"})
    w.leaf("name", text=domain["name"])
    # numbers cross the engine as doubles; the provider's schema types them as int
    w.leaf("memory", {"unit": "MiB"}, str(int(domain.get("memory", 512))))
    w.leaf("vcpu", text=str(int(domain.get("vcpu", 1))))
    w.open("os")
    type_attrs = {}
    if domain.get("arch"):
        type_attrs["arch"] = domain["arch"]
    type_attrs["machine"] = canonical.get(domain.get("machine") or "pc", domain.get("machine") or "pc")
    w.leaf("type", type_attrs, "hvm")
    if domain.get("firmware"):
        w.leaf("loader", {"readonly": "yes", "secure": "no", "type": "pflash"}, domain["firmware"])
        nvram = domain.get("nvram")
        if nvram:
            attrs = {"template": nvram["template"]} if nvram.get("template") else {}
            w.leaf("nvram", attrs, nvram.get("file", ""))
    w.close("os")
    w.open("features")
    for f in ("pae", "acpi", "apic"):
        w.leaf(f)
    w.close("features")
    cpu = domain.get("cpu") or {}
    w.leaf("cpu", {"mode": cpu["mode"]} if cpu.get("mode") else {})
    w.open("devices")
    for disk in domain.get("disks", []):
        ref = volumes[disk["volumeId"]]
        w.open("disk", {"type": "volume", "device": "disk"})
        w.leaf("driver", {"name": "qemu", "type": "qcow2" if ref.format == "qcow2" else "raw"})
        w.leaf("source", {"pool": ref.pool, "volume": ref.name})
        w.leaf("target", {"dev": "vda", "bus": "virtio"})
        w.close("disk")
    if domain.get("cloudinit"):
        w.open("disk", {"type": "file", "device": "cdrom"})
        w.leaf("driver", {"name": "qemu", "type": "raw"})
        w.leaf("source", {"file": cloudinit_paths[domain["cloudinit"]]})
        w.leaf("target", {"dev": "hdd", "bus": "ide"})
        w.leaf("serial", text="cloudinit")
        w.close("disk")
    for nic in domain.get("networkInterfaces", []):
        w.open("interface", {"type": "network"})
        w.leaf("mac", {"address": nic["mac"].upper()})
        w.leaf("source", {"network": nic["networkName"]})
        w.leaf("model", {"type": "virtio"})
        w.close("interface")
    for console in domain.get("consoles", []):
        w.open("console")
        w.leaf("target", {"type": console.get("targetType", "serial"), "port": str(console.get("targetPort", "0"))})
        w.close("console")
    w.open("channel", {"type": "unix"})
    w.leaf("target", {"type": "virtio", "name": "org.qemu.guest_agent.0"})
    w.close("channel")
    graphics = domain.get("graphics")
    if graphics:
        w.open("graphics", {"type": graphics.get("type", "spice"), "autoport": "yes" if graphics.get("autoport", True) else "no"})
        w.leaf("listen", {"type": graphics.get("listenType", "none"), "address": graphics.get("listenAddress", "127.0.0.1")})
        w.close("graphics")
    else:
        w.leaf("graphics", {"type": "spice", "autoport": "yes"})
    w.open("rng", {"model": "virtio"})
    w.leaf("backend", {"model": "random"}, "/dev/urandom")
    w.close("rng")
    w.close("devices")
    w.close("domain")
    return "\n".join(w.lines)
