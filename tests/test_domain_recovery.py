"""A failed start must not leave the stack stuck (issue 22, item 2).

terraform-provider-libvirt v0.8.1 creates a domain as define, autostart (only when
the `autostart` input is true), start (resourceLibvirtDomainCreate) and returns
before d.SetId when the start fails:
the domain stays defined in libvirt and Pulumi's state never has it. The next
`pulumi up` creates again. These tests run that sequence against a real
libvirtd (scripts/start-libvirtd.sh) with the domain XML the plan produces
(the real xsltproc on the plan's stylesheet and pre-XSLT XML), less its disks
and NIC: they name the storage pool and network `default`, which the test
machine lacks, and libvirt resolves those before it looks at the hostdevs.
Name, UUID, firmware, NVRAM and hostdevs stay. The test machine has no VFIO,
so the start fails exactly as on a host whose GPUs are not bound to vfio-pci.
Each test defines domains under names of its own and undefines exactly those
(with their NVRAM) at the end.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest
from lxml import etree

from render.identity import derived_machine_uuid
from tests.conftest import missing_validator, require_tool, run_stack, stack_file
from tools.mockrun import PROJECT
from hypervisors.libvirt.plan_files import domain_files

DOMAIN = "libvirt:index/domain:Domain"


def _plan_files(stack: str, vm_name: str) -> dict[str, str]:
    raw = stack_file("dev")
    raw["vms"][0]["name"] = vm_name
    result = run_stack(raw, stack=stack)
    return domain_files(result.resources, result.of_type(DOMAIN)[0])


# --- the derivation (no libvirtd needed) -----------------------------------------------------------


def test_machine_uuid_is_deterministic_and_differs_by_project_stack_and_vm():
    first = derived_machine_uuid("gpu-stack", "prod", "ubuntu-gpu")
    assert first == derived_machine_uuid("gpu-stack", "prod", "ubuntu-gpu")
    assert uuid.UUID(first).version == 5
    others = {derived_machine_uuid("gpu-stack", "dev", "ubuntu-gpu"), derived_machine_uuid("gpu-stack", "prod", "ubuntu-gpu-1"),
              derived_machine_uuid("other-project", "prod", "ubuntu-gpu")}
    assert first not in others and len(others) == 3


def test_the_plans_domain_carries_the_derived_uuid_after_its_name():
    files = _plan_files("test", "gpu-dev-0")
    doc = etree.fromstring(files["domain.xml"].encode())
    assert "<uuid>" not in files["domain.pre-xslt.xml"], "the provider writes none; the stylesheet adds it"
    assert [c.tag for c in doc][:2] == ["name", "uuid"]
    assert doc.findtext("uuid") == derived_machine_uuid(PROJECT, "test", "gpu-dev-0")
    again = _plan_files("test", "gpu-dev-0")
    assert again["domain.xml"] == files["domain.xml"] and again["domain.xslt"] == files["domain.xslt"]
    assert _plan_files("other", "gpu-dev-0")["domain.xml"] != files["domain.xml"]


# --- against a real libvirtd -----------------------------------------------------------------------


@pytest.fixture
def host(tmp_path):
    """The provider's create sequence on qemu:///system; undefines, at the end, the domains it defined."""
    require_tool("virsh")
    from tests.support.libvirt_host import virsh

    proc = subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True, text=True)
    if proc.returncode != 0:
        missing_validator(f"no libvirtd answers on qemu:///system (scripts/start-libvirtd.sh starts one): {proc.stderr.strip()}")
    h = _Host(tmp_path, virsh)
    yield h
    for name in h.created:
        virsh("destroy", name, check=False)
        virsh("undefine", "--nvram", name, check=False)


class _Host:
    def __init__(self, tmp: Path, virsh):
        self.tmp, self.virsh, self.created = tmp, virsh, []

    def domain_xml(self, stack: str, vm_name: str) -> str:
        """The domain libvirt receives from the plan of `stack` with vms[0] named vm_name (xsltproc, as the provider runs it)."""
        files = _plan_files(stack, vm_name)
        (self.tmp / "d.xslt").write_text(files["domain.xslt"])
        (self.tmp / "in.xml").write_text(files["domain.pre-xslt.xml"])
        xml = subprocess.run([require_tool("xsltproc"), "--nonet", str(self.tmp / "d.xslt"), str(self.tmp / "in.xml")],
                             capture_output=True, text=True, check=True).stdout
        from tests.support.libvirt_host import kvm_available

        doc = etree.fromstring(xml.encode())
        devices = doc.find("devices")
        for tag in ("disk", "interface"):
            for el in devices.findall(tag):
                devices.remove(el)
        if not kvm_available():
            doc.set("type", "qemu")
        return etree.tostring(doc, encoding="unicode")

    def define(self, xml: str) -> subprocess.CompletedProcess:
        name = etree.fromstring(xml.encode()).findtext("name")
        path = self.tmp / f"{name}-{len(self.created)}.xml"
        path.write_text(xml)
        if self.virsh("domuuid", name, check=False).returncode != 0 and name not in self.created:
            self.created.append(name)  # this test defines it (if libvirt accepts): this test undefines it
        return self.virsh("define", str(path), check=False)

    def create(self, xml: str, autostart: bool = False) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess | None]:
        """resourceLibvirtDomainCreate at v0.8.1: DomainDefineXML, DomainSetAutostart when `autostart` is set
        (`d.GetOk("autostart")`: gpu-stack's Domain sets it false), DomainCreate."""
        define = self.define(xml)
        if define.returncode != 0:
            return define, None
        name = etree.fromstring(xml.encode()).findtext("name")
        if autostart:
            self.virsh("autostart", name)
        return define, self.virsh("start", name, check=False, timeout=120)

    def autostart(self, name: str) -> bool:
        return "Autostart:      enable" in self.virsh("dominfo", name).stdout

    def state(self, name: str) -> str:
        return self.virsh("domstate", name).stdout.strip()

    def uuid(self, name: str) -> str:
        return self.virsh("domuuid", name).stdout.strip()


def _unique(prefix: str = "gst") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# libvirt v9.0.0 src/qemu/qemu_hostdev.c: "host doesn't support VFIO PCI passthrough" (no /dev/vfio/vfio);
# on a host with VFIO but without these PCI addresses the start fails on the missing device instead.
START_FAILS_FOR_PASSTHROUGH = re.compile(r"VFIO|passthrough|PCI device|0000:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", re.I)


def _failed_start(host: _Host, xml: str) -> str:
    define, start = host.create(xml)
    name = etree.fromstring(xml.encode()).findtext("name")
    assert define.returncode == 0, define.stderr
    assert start is not None and start.returncode != 0, "the start must fail here: no VFIO on this machine"
    assert START_FAILS_FOR_PASSTHROUGH.search(start.stderr), start.stderr
    assert host.state(name) == "shut off", "the failed start leaves the domain defined, as on the real host"
    return name


def test_next_up_adopts_the_domain_a_failed_start_left_behind(host):
    """Item 2: after the failed create, the next `pulumi up` creates again with the same XML and must get past define."""
    stack, vm = _unique("st"), _unique()
    xml = host.domain_xml(stack, vm)
    name = _failed_start(host, xml)
    define, start = host.create(xml)
    assert define.returncode == 0, f"the next up's define is refused, the stack is stuck: {define.stderr.strip()}"
    assert host.uuid(name) == derived_machine_uuid(PROJECT, stack, vm)
    assert start is not None and start.returncode != 0 and START_FAILS_FOR_PASSTHROUGH.search(start.stderr), \
        "no VFIO here still: the start fails for passthrough again, not for the leftover"
    assert not host.autostart(name), "autostart is set only once a start succeeded (<vm>-autostart), so a reboot leaves it off"
    nvram = etree.fromstring(xml.encode()).find("os/nvram")
    assert Path(nvram.text).read_bytes() == Path(nvram.get("template")).read_bytes(), \
        "the failed start left its NVRAM as a fresh copy of the template, which the next start reuses"


def test_without_a_fixed_uuid_the_leftover_blocks_every_later_create(host):
    """What the provider does alone (no <uuid>: libvirt picks a random one): the second define is refused."""
    xml = host.domain_xml(_unique("st"), _unique())
    doc = etree.fromstring(xml.encode())
    doc.remove(doc.find("uuid"))
    random_uuid = etree.tostring(doc, encoding="unicode")
    name = _failed_start(host, random_uuid)
    leftover = host.uuid(name)
    define, _ = host.create(random_uuid)
    assert define.returncode != 0
    assert f"domain '{name}' already exists with uuid {leftover}" in define.stderr


def test_a_domain_of_another_stack_with_the_same_vm_name_is_not_taken_over(host):
    vm = _unique()
    ours, theirs = host.domain_xml(_unique("st"), vm), host.domain_xml(_unique("st"), vm)
    name = _failed_start(host, theirs)
    their_uuid = host.uuid(name)
    define, start = host.create(ours)
    assert define.returncode != 0 and start is None
    assert f"domain '{name}' already exists with uuid {their_uuid}" in define.stderr
    assert host.uuid(name) == their_uuid and host.state(name) == "shut off"


def test_a_failed_start_leaves_no_autostart_for_the_host_to_act_on(host):
    """With autostart set by the provider before its start (the old inputs), a failed start left an autostarting
    domain: the host's reboot after the fix started it, and the next up failed "domain is already running"."""
    xml = host.domain_xml(_unique("st"), _unique())
    old_define, old_start = host.create(xml, autostart=True)
    name = etree.fromstring(xml.encode()).findtext("name")
    assert old_define.returncode == 0 and old_start is not None and old_start.returncode != 0
    assert host.autostart(name), "what the old inputs left behind"
    host.virsh("autostart", "--disable", name)
    _, start = host.create(xml)  # today's inputs: autostart false
    assert start is not None and start.returncode != 0 and not host.autostart(name)


def test_the_autostart_command_of_the_plan_marks_the_domain(host):
    """<vm>-autostart's command text, as the plan has it, run against the real libvirtd."""
    from hypervisors.libvirt.connection import autostart_command

    xml = host.domain_xml(_unique("st"), _unique())
    name = _failed_start(host, xml)
    command = autostart_command("qemu+ssh://root@hv.lab/system", name)
    assert command == f"virsh -c qemu:///system autostart {name}"
    subprocess.run(command, shell=True, check=True, capture_output=True, text=True, timeout=60)
    assert host.autostart(name)


def test_a_running_leftover_is_redefined_but_must_be_stopped_before_up_starts_it(host):
    """A leftover that runs (started by hand, or autostarted by a host reboot when the old inputs had set autostart
    before the failed start); docs/OPERATIONS.md says to `virsh destroy` it first.

    The leftover here is the same name and UUID started paused without its devices (this machine cannot start the
    passthrough one); libvirt's define (flags 0) replaces a running domain's persistent definition as well.
    """
    require_tool("qemu-system-x86_64")
    from tests.support.libvirt_host import for_tcg_boot

    xml = host.domain_xml(_unique("st"), _unique())
    doc = etree.fromstring(xml.encode())
    bootable = etree.fromstring(for_tcg_boot(xml, 46).encode())
    bootable.find("name").text, bootable.find("uuid").text = doc.findtext("name"), doc.findtext("uuid")
    name = doc.findtext("name")
    assert host.define(etree.tostring(bootable, encoding="unicode")).returncode == 0
    host.virsh("start", "--paused", name, timeout=120)
    define, start = host.create(xml)
    assert define.returncode == 0, define.stderr
    # the provider's DomainCreate gets libvirtd's "domain is already running" (qemuDomainCreateWithFlags, v9.0.0
    # src/qemu/qemu_driver.c); virsh checks first and says "Domain is already active"
    assert start is not None and start.returncode != 0 and re.search(r"already (running|active)", start.stderr), start.stderr
    host.virsh("destroy", name)
    define, start = host.create(xml)
    assert define.returncode == 0 and start is not None and START_FAILS_FOR_PASSTHROUGH.search(start.stderr), \
        "stopped, it is adopted like any leftover (and fails here for want of VFIO)"
