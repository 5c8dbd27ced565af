"""The `xml.xslt` stylesheet that turns the provider's domain into a GPU passthrough VM.

terraform-provider-libvirt v0.8.1 has no hostdev, cputune, NUMA or qemu args,
so they are added here. The traps this stylesheet handles, each from
tests/reference/tf-libvirt-v0.8.1-NOTES.md and checked by the tests:

- the cloud-init cdrom comes on bus="ide", which q35 lacks: moved to sata;
- `<qemu:commandline>` needs the qemu namespace declared here, or libvirt
  silently drops it;
- `<maxphysaddr>` and `<numa>` go into the existing `<cpu>`, `<kvm>` into the
  existing `<features>`; a second copy would be dropped on define;
- guest NUMA cells sum exactly to `<memory>` (libvirt rewrites it otherwise and
  the provider then sees drift and replaces the VM);
- if the provider XML ever lacks `<cpu>`, `<features>` or `<devices>` the
  stylesheet stops (xsl:message terminate, exit 10) instead of silently
  producing a VM without passthrough;
- the provider writes no `<uuid>`, so libvirt would pick a random one, and a
  create whose start fails (VFIO not bound, a group not viable, BARs that do
  not fit) leaves a defined domain the provider never records (it returns
  before d.SetId: resource_libvirt_domain.go resourceLibvirtDomainCreate at
  v0.8.1). The next create of the same name would then be refused for ever.
  The stylesheet therefore sets the plan's derived UUID (VmPlan.machine_uuid)
  right after `<name>` (the domain RNG puts `name` and `uuid` in one
  interleave, src/conf/schemas/domaincommon.rng `ids`). With libvirt v9.0.0
  (Debian 12's 9.0.0-4+deb12u2, no patch to these files), a define:
  * of a name that exists with ANOTHER UUID is refused, "domain '%s' already
    exists with uuid %s" (src/conf/virdomainobjlist.c virDomainObjListAddLocked,
    the "UUID does not match, but if a name matches, refuse it" branch): another
    stack's or a hand-made domain is never taken over;
  * of the same name AND UUID replaces the existing definition
    (virDomainObjAssignDef in the same function; qemuDomainDefineXMLFlags in
    src/qemu/qemu_driver.c passes flags 0, so no "already active" check). The
    next `pulumi up` thus redefines its own leftover and starts it. Its
    autostart flag lives outside the XML and is off (the Domain's autostart
    input is false; <vm>-autostart sets it once a start succeeded); its
    NVRAM file is a never-booted copy of the template (qemuProcessPrepareHost
    in src/qemu/qemu_process.c writes it in qemuPrepareNVRAM before the hostdev
    check fails) and is reused as it is. A leftover that is RUNNING (libvirt
    was started by hand) is redefined too, but the provider's start then
    fails "domain is already running"
    (qemuDomainCreateWithFlags): docs/OPERATIONS.md says to stop it first.

The output is byte-stable for a given spec: any change replaces the domain
(the argument is ForceNew), NVRAM included.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

from render.numa import Placement, guest_topology
from config.types import format_cpu_list, pci_parts

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@dataclass(frozen=True)
class AffinityGroup:
    """Devices that sit behind one pcie-expander-bus bound to a guest NUMA cell."""

    guest_cell: int
    devices: tuple[tuple[str, ...], ...]  # per root port: the functions of one device, function 0 first


@dataclass(frozen=True)
class DomainSpec:
    hostdevs: tuple[str, ...]  # PCI addresses, in attach order
    placement: Placement
    hole64_gib: int  # 0: leave QEMU's default
    uuid: str  # the domain's <uuid> (VmPlan.machine_uuid); "" leaves it to libvirt (random)
    maxphysaddr: str = "passthrough"  # "passthrough" or "emulate:<bits>"
    hugepages_1g: bool = False
    kvm_hidden: bool = False
    affinity: tuple[AffinityGroup, ...] = ()  # empty: libvirt places the hostdevs on pcie-root
    housekeeping_cpus: tuple[int, ...] = ()  # hosts[].reservedCpus: emulator and I/O threads run here


# Controller indexes and guest bus numbers for the expanders. libvirt numbers
# its own automatic controllers from 1 upward; ours start well above them.
FIRST_CONTROLLER_INDEX = 0x40
FIRST_EXPANDER_BUS = 0x80
EXPANDER_BUS_SPACING = 0x20

# Limits of the PCIe topology above. q35 has one PCI segment, so bus numbers
# are 0-255; a slot is 0x00-0x1f; a controller's index is the `bus` of the
# addresses behind it, so it is at most 0xff too.
MAX_BUS = 0xFF
MAX_SLOT = 0x1F
# With exposeGpuAffinity: expander n takes bus FIRST_EXPANDER_BUS + n * spacing
# and its root ports the bus numbers after it, one each (a port holds one
# device, its functions included), up to the next expander's. Booted under
# TCG at 4 x 31: OVMF numbers the ports' buses 129-159, ..., 225-255.
MAX_EXPANDERS = (MAX_BUS + 1 - FIRST_EXPANDER_BUS) // EXPANDER_BUS_SPACING  # 4
MAX_PORTS_PER_EXPANDER = min(EXPANDER_BUS_SPACING - 1, MAX_SLOT + 1)  # 31
# The largest controller index is then FIRST_CONTROLLER_INDEX + 4 + 4 * 31 - 1 = 0xbf.
assert FIRST_CONTROLLER_INDEX + MAX_EXPANDERS * (1 + MAX_PORTS_PER_EXPANDER) - 1 <= MAX_BUS
# Without it libvirt adds one pcie-root-port per hostdev, eight per pcie-root
# slot, in slots 0x02-0x1e (0x00 host bridge, 0x01 video, 0x1f ICH9 LPC/SATA).
# The provider's root disk, NIC, RNG, USB and virtio-serial controllers take
# five of those ports and libvirt keeps one free for hotplug; past that
# `virsh define` fails with "a PCI slot is needed to connect a PCI controller".
ROOT_PORTS_ON_PCIE_ROOT = (0x1E - 0x02 + 1) * 8  # 232
PROVIDER_ROOT_PORTS = 6
MAX_ROOT_HOSTDEVS = ROOT_PORTS_ON_PCIE_ROOT - PROVIDER_ROOT_PORTS  # 226


def pcie_problems(devices_per_cell: dict[int, int] | None, hostdevs: int) -> list[str]:
    """Why this VM's devices do not fit the topology; devices_per_cell (guest cell -> devices) is None without exposeGpuAffinity."""
    if devices_per_cell is None:
        if hostdevs > MAX_ROOT_HOSTDEVS:
            return [f"{hostdevs} PCI functions to pass through exceed what pcie-root holds: at most {MAX_ROOT_HOSTDEVS} "
                    f"(one pcie-root-port each, {ROOT_PORTS_ON_PCIE_ROOT} ports in slots 0x02-0x1e less {PROVIDER_ROOT_PORTS} for the VM's own devices)"]
        return []
    problems = []
    if len(devices_per_cell) > MAX_EXPANDERS:
        problems.append(f"exposeGpuAffinity puts the devices of {len(devices_per_cell)} guest NUMA cells behind one pcie-expander-bus each; "
                        f"at most {MAX_EXPANDERS} fit (bus numbers 0x{FIRST_EXPANDER_BUS:02x}-0x{MAX_BUS:02x}, 0x{EXPANDER_BUS_SPACING:02x} per expander)")
    for cell, count in sorted(devices_per_cell.items()):
        if count > MAX_PORTS_PER_EXPANDER:
            problems.append(f"{count} devices on guest NUMA cell {cell} exceed what one pcie-expander-bus holds with exposeGpuAffinity: "
                            f"at most {MAX_PORTS_PER_EXPANDER} (one root port and bus number each, below the next expander's bus)")
    return problems


def _expanders(spec: DomainSpec) -> tuple[str, dict[str, str]]:
    """Controller XML, and the guest address of every hostdev placed behind an expander."""
    xml: list[str] = []
    guest_address: dict[str, str] = {}
    index = FIRST_CONTROLLER_INDEX
    for n, group in enumerate(spec.affinity):
        expander = index
        index += 1
        xml.append(
            f'<controller type="pci" index="{expander}" model="pcie-expander-bus">'
            f'<target busNr="{FIRST_EXPANDER_BUS + n * EXPANDER_BUS_SPACING}"><node>{group.guest_cell}</node></target>'
            "</controller>"
        )
        for slot, functions in enumerate(group.devices):
            port = index
            index += 1
            xml.append(
                f'<controller type="pci" index="{port}" model="pcie-root-port">'
                f'<address type="pci" domain="0x0000" bus="0x{expander:02x}" slot="0x{slot:02x}" function="0x0"/>'
                "</controller>"
            )
            for address in functions:
                function = pci_parts(address)[3]
                multi = ' multifunction="on"' if function == 0 and len(functions) > 1 else ""
                guest_address[address] = f'<address type="pci" domain="0x0000" bus="0x{port:02x}" slot="0x00" function="0x{function:x}"{multi}/>'
    return "".join(xml), guest_address


def _q(v: str) -> str:
    return quoteattr(v)


def _hostdev(address: str, guest_address: str = "") -> str:
    domain, bus, slot, function = pci_parts(address)
    return (
        '<hostdev mode="subsystem" type="pci" managed="yes">'
        '<driver name="vfio"/>'
        f'<source><address domain="0x{domain:04x}" bus="0x{bus:02x}" slot="0x{slot:02x}" function="0x{function:x}"/></source>'
        f"{guest_address}"
        "</hostdev>"
    )


def _maxphysaddr(spec: DomainSpec) -> str:
    if spec.maxphysaddr == "passthrough":
        return '<maxphysaddr mode="passthrough"/>'
    mode, bits = spec.maxphysaddr.split(":")
    return f'<maxphysaddr mode={_q(mode)} bits={_q(bits)}/>'


def _topology(spec: DomainSpec) -> str:
    if not spec.placement.cells:
        return ""
    sockets, cores, threads = guest_topology(spec.placement)
    return f'<topology sockets="{sockets}" dies="1" cores="{cores}" threads="{threads}"/>'


def _housekeeping(spec: DomainSpec) -> tuple[str, str, str]:
    """(emulatorpin cpuset, <iothreads> + iothreadpin XML, disk driver template).

    With hosts[].reservedCpus, QEMU's emulator threads and one I/O thread for the
    root disk run on those housekeeping CPUs instead of stealing time from the
    pinned vCPUs (libvirt formatdomain: emulatorpin, iothreadpin since 1.2.9,
    iothreads since 1.2.8, disk driver iothread). Without: the emulator floats over
    the vCPUs' CPUs, as before.
    """
    cells = spec.placement.cells
    if not spec.housekeeping_cpus:
        return format_cpu_list([h for c in cells for h in c.host_cpus]), "", ""
    cpus = format_cpu_list(list(spec.housekeeping_cpus))
    iothreads = f'<iothreadpin iothread="1" cpuset="{cpus}"/>'
    driver = (
        "  <!-- the root disk (the provider's only device='disk') is served by I/O thread 1 on the housekeeping CPUs -->\n"
        '  <xsl:template match="/domain/devices/disk[@device=\'disk\'][1]/driver">\n'
        '    <xsl:copy><xsl:apply-templates select="@*"/><xsl:attribute name="iothread">1</xsl:attribute><xsl:apply-templates select="node()"/></xsl:copy>\n'
        "  </xsl:template>"
    )
    return cpus, iothreads, driver


def render_domain_xslt(spec: DomainSpec) -> str:
    cells = spec.placement.cells
    numa = "".join(
        f'<cell id="{c.guest_id}" cpus={_q(format_cpu_list(c.vcpus))} memory="{c.memory_mib}" unit="MiB"/>' for c in cells
    )
    vcpupins = "".join(
        f'<vcpupin vcpu="{v}" cpuset="{h}"/>' for c in cells for v, h in zip(c.vcpus, c.host_cpus)
    )
    emulator_cpus, iothread_pins, disk_driver = _housekeeping(spec)
    nodeset = format_cpu_list(list(spec.placement.host_nodes))
    memnodes = "".join(f'<memnode cellid="{c.guest_id}" mode="strict" nodeset="{c.host_node}"/>' for c in cells)
    controllers, guest_address = _expanders(spec)
    hostdevs = controllers + "".join(_hostdev(a, guest_address.get(a, "")) for a in spec.hostdevs)
    features_extra = '<kvm><hidden state="on"/></kvm>' if spec.kvm_hidden else ""
    backing = (
        '<memoryBacking><hugepages><page size="1" unit="GiB"/></hugepages></memoryBacking>'
        if spec.hugepages_1g
        else ""
    )
    uuid = f"    <uuid>{spec.uuid}</uuid>" if spec.uuid else None
    qemu_args = (
        f'<qemu:commandline><qemu:arg value="-global"/><qemu:arg value="q35-pcihost.pci-hole64-size={spec.hole64_gib}G"/></qemu:commandline>'
        if spec.hole64_gib
        else ""
    )
    # the two comments below still name this module's old path, render/domain_xslt.py: the stylesheet is the Domain's
    # xml.xslt input, which the provider replaces the domain on, so its text stays as every deployed domain has it
    parts = [
        '<?xml version="1.0"?>',
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"',
        f'    xmlns:qemu="{QEMU_NS}" exclude-result-prefixes="qemu">',
        '  <xsl:output method="xml" indent="yes"/>',
        '  <xsl:strip-space elements="*"/>',
        "  <!-- gpu-stack: rendered by render/domain_xslt.py; any change here replaces the domain. -->",
        '  <xsl:template match="/">',
        '    <xsl:if test="not(/domain/cpu) or not(/domain/features) or not(/domain/devices)">',
        '      <xsl:message terminate="yes">gpu-stack: provider XML lacks cpu, features or devices; refusing to drop the passthrough settings</xsl:message>',
        "    </xsl:if>",
        "    <xsl:apply-templates/>",
        "  </xsl:template>",
        '  <xsl:template match="@*|node()">',
        '    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>',
        "  </xsl:template>",
        '  <xsl:template match="/domain">',
        '    <xsl:copy><xsl:apply-templates select="@*|node()"/>',
        f"      {backing}" if backing else None,
        "      <iothreads>1</iothreads>" if iothread_pins else None,
        f'      <cputune>{vcpupins}<emulatorpin cpuset="{emulator_cpus}"/>{iothread_pins}</cputune>' if cells else None,
        f'      <numatune><memory mode="strict" nodeset="{nodeset}"/>{memnodes}</numatune>' if cells else None,
        f"      {qemu_args}" if qemu_args else None,
        "    </xsl:copy>",
        "  </xsl:template>",
        "  <!-- a fixed UUID: the next create redefines a leftover of a failed start (render/domain_xslt.py) -->" if uuid else None,
        '  <xsl:template match="/domain/name">' if uuid else None,
        '    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>' if uuid else None,
        uuid,
        "  </xsl:template>" if uuid else None,
        '  <xsl:template match="/domain/uuid"/>' if uuid else None,
        '  <xsl:template match="/domain/cpu">',
        '    <xsl:copy><xsl:apply-templates select="@*|node()"/>',
        f"      {_topology(spec)}" if cells else None,
        f"      {_maxphysaddr(spec)}",
        f"      <numa>{numa}</numa>" if cells else None,
        "    </xsl:copy>",
        "  </xsl:template>",
        '  <xsl:template match="/domain/features">',
        f'    <xsl:copy><xsl:apply-templates select="@*|node()"/>{features_extra}</xsl:copy>',
        "  </xsl:template>",
        '  <xsl:template match="/domain/devices">',
        '    <xsl:copy><xsl:apply-templates select="@*|node()"/>',
        f"      {hostdevs}" if hostdevs else None,
        '      <memballoon model="none"/>',
        "    </xsl:copy>",
        "  </xsl:template>",
        "  <!-- q35 has no IDE: the provider's cloud-init cdrom moves to SATA; dev hdd and serial cloudinit stay. -->",
        '  <xsl:template match="/domain/devices/disk[@device=\'cdrom\']/target/@bus[.=\'ide\']">',
        '    <xsl:attribute name="bus">sata</xsl:attribute>',
        "  </xsl:template>",
        "  <!-- libvirtxml omits the console type; libvirt defaults to pty, the RNG schema wants it spelled out. -->",
        '  <xsl:template match="/domain/devices/console[not(@type)]">',
        '    <xsl:copy><xsl:attribute name="type">pty</xsl:attribute><xsl:apply-templates select="@*|node()"/></xsl:copy>',
        "  </xsl:template>",
        disk_driver or None,
        "</xsl:stylesheet>",
    ]
    return "\n".join(p for p in parts if p is not None) + "\n"
