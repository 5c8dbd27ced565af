"""Bad input is refused before anything is registered, at the exact key, saying what is accepted.

One table drives every field of the config schema to at least one refused
value: each row starts from the dev stack (tests/conftest.py stack_file),
optionally sets up context, mutates one path, and names the key the error
must carry. `test_every_schema_field_has_a_row` walks
StackConfig.model_json_schema() and fails for a field without a row, so a
field added later needs one too. The PCIe topology limits are tested at the
limit and one past it; malformed files go through `make plan`'s loader.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from hypervisors.libvirt.domain_xslt import MAX_EXPANDERS, MAX_PORTS_PER_EXPANDER, MAX_ROOT_HOSTDEVS
from render.identity import derived_mac
from config.models import REMOVED_KEYS, SECRET_KEYS, StackConfig
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import ROOT, stack_file
from tools import plan as plan_tool

SECRETS = {"sshPrivateKey", "grafanaAdminPassword", "kubevirtKubeconfig"}  # kubevirtKubeconfig: only read for kind kubevirt hosts
DELETE = object()


@dataclass(frozen=True)
class Row:
    path: str  # the one path mutated, e.g. vms[0].network.mac
    value: Any
    key: str | None = None  # the key the error names; default: path
    why: str = ""  # a fragment of the message (what is accepted, or the related key)
    setup: dict[str, Any] = field(default_factory=dict)  # context set first (path -> value), valid on its own
    also: tuple[str, ...] = ()  # other keys the same mistake is rightly reported at

    @property
    def expected(self) -> str:
        return self.key or self.path

    @property
    def id(self) -> str:
        return f"{self.path}={self.value!r}"[:80]


SECOND_VM = {"name": "gpu-dev-1", "host": "lab-gpu-1", "vcpus": 8, "memoryGib": 32,
             "gpus": [{"address": "0000:3c:00.0", "model": "L40S", "numaNode": 0}]}
# a whole HGX H100 board: 8 GPUs and its 4 NVSwitches (Fabric Manager guide, full passthrough)
H100S = [{"address": f"0000:{b:02x}:00.0", "model": "H100-SXM5-80GB", "numaNode": 0} for b in (0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb)]
SWITCHES4 = [{"address": f"0000:0{5 + i}:00.0", "numaNode": 0} for i in range(4)]
SWITCH = {"vms[0].gpus": H100S, "vms[0].nvswitches": SWITCHES4}
CELLS = {"vms[0].numa.cells": [{"hostNode": 0, "vcpus": 8, "memoryGib": 64}]}
CUDA = {"guest.nvidia.cuda": {"version": "12.8.1", "runfileUrl": "https://developer.download.nvidia.com/cuda_12.8.1_linux.run"}}
PROXY = {"guest.proxy": {"http": "http://proxy.lab.local:3128"}}
MIRROR = {"guest.registryMirrors": [{"registry": "nvcr.io", "endpoint": "https://harbor.lab.local/v2/nvcr"}]}
JOIN = {"kubernetes.join": {"controlPlaneEndpoint": "cp.lab.local:6443", "caCertHash": "sha256:" + "ab" * 32}}
TAINT = {"kubernetes.nodeTaints": [{"key": "example.com/gpu", "effect": "PreferNoSchedule"}]}
OPERATOR = {"addons.devicePlugin.enabled": False, "addons.gpuOperator.enabled": True}
# a second host, kind vsphere and without VMs (so no vSphere credentials are needed): tests/test_vsphere.py, Pulumi.esxi.yaml
VSPHERE_HOST = {"name": "esxi-1", "kind": "vsphere", "numaNodes": [{"id": 0, "cpus": "0-15", "memoryGib": 128}],
                "vsphere": {"endpoint": "vcenter.lab.local", "datacenter": "lab", "host": "10.203.43.10", "datastore": "datastore1",
                            "network": "VM Network", "template": {"vm": "almalinux-9.6-cloud-template"}, "pciDevices": ["0000:03:00.0"]}}
VSPHERE = {"hosts[1]": VSPHERE_HOST}
# a second host, kind proxmox and without VMs (so no Proxmox credentials are needed): tests/test_proxmox.py, Pulumi.proxmox.yaml
PROXMOX_HOST = {"name": "pve-1", "kind": "proxmox", "numaNodes": [{"id": 0, "cpus": "0-15", "memoryGib": 128}],
                "proxmox": {"endpoint": "https://pve-1.lab.local:8006/", "node": "pve-1", "image": "local:import/noble.qcow2"}}
PROXMOX = {"hosts[1]": PROXMOX_HOST}
OVF = {**VSPHERE, "hosts[1].vsphere.template": {"ovf": "http://mirror.lab.local/images/alma-9.6.ova"}}
PASCAL = {"vms[0].gpus[0].model": "P100-PCIE-16GB"}
KV = {"hosts[0].kind": "kubevirt", "hosts[0].libvirtUri": DELETE, "hosts[0].hostKey": DELETE, "hosts[0].baseImage": DELETE,
      "hosts[0].kubevirt": {"namespace": "gpu-vms", "nodeName": "lab-gpu-1", "rootDisk": {"url": "https://images.lab.local/noble.img"},
                            "ssh": {"nodePort": 30122, "address": "10.0.0.31"}}}
KV_LB = {**KV, "hosts[0].kubevirt.ssh": {"serviceType": "LoadBalancer"}}
# a second KubeVirt node without VMs, its VMs in the same namespace, the namespace created elsewhere
KV_SECOND = {**KV, "hosts[1]": {"name": "kv-2", "kind": "kubevirt", "numaNodes": [{"id": 0, "cpus": "0-15", "memoryGib": 128}],
                                "kubevirt": {"namespace": "gpu-vms", "createNamespace": False, "nodeName": "kv-2",
                                             "rootDisk": {"url": "https://images.lab.local/noble.img"}, "ssh": {"nodePort": 30200, "address": "10.0.0.32"}}},
             "hosts[0].kubevirt.createNamespace": False}

ROWS: tuple[Row, ...] = (
    # hosts[].kind kubevirt (seed 002)
    Row("hosts[0].kind", "kvm", why="'libvirt', 'vsphere', 'kubevirt' or 'proxmox'"),
    Row("hosts[0].kubevirt", DELETE, why="required for kind kubevirt", setup=KV),
    Row("hosts[0].kubevirt", {"namespace": "x"}, key="hosts[0].kubevirt.rootDisk", why="required key is missing"),
    Row("hosts[0].kubevirt.namespace", "GPU_VMS", why="lower-case", setup=KV),
    Row("hosts[0].kubevirt.nodeName", DELETE, why="exactly one of nodeName", setup=KV),
    Row("hosts[0].kubevirt.nodeSelector", {"gpu": "a b"}, key="hosts[0].kubevirt.nodeSelector.gpu", why="label value", setup=KV),
    Row("hosts[0].kubevirt.rootDisk", "noble.img", why="valid dictionary", setup=KV),
    Row("hosts[0].kubevirt.rootDisk.url", "ftp://images/noble.img", why="http", setup=KV),
    Row("hosts[0].kubevirt.rootDisk.registry", "Not An Image", why="image", setup=KV),
    Row("hosts[0].kubevirt.rootDisk.containerDisk", "Not An Image", why="image", setup=KV),
    Row("hosts[0].kubevirt.rootDisk.storageClass", "Fast_SSD", why="DNS", setup=KV),
    Row("hosts[0].kubevirt.ssh", "nodeport", why="valid dictionary", setup=KV),
    Row("hosts[0].kubevirt.ssh.via", "multus", why="not implemented", setup=KV),
    Row("hosts[0].kubevirt.ssh.serviceType", "ClusterIP", why="'NodePort' or 'LoadBalancer'", setup=KV),
    Row("hosts[0].kubevirt.ssh.nodePort", 22, why="greater than or equal to 30000", setup=KV),
    Row("hosts[0].kubevirt.ssh.nodePort", 30122, why="only for serviceType NodePort", setup=KV_LB),
    Row("hosts[0].kubevirt.ssh.address", DELETE, why="required for serviceType NodePort", setup=KV),
    Row("hosts[0].kubevirt.manageKubeVirtConfig", "yes please", why="valid boolean", setup=KV),
    Row("hosts[0].kubevirt.createNamespace", "yes please", why="valid boolean", setup=KV),
    Row("hosts[0].kubevirt.namespace", "kubevirt", key="hosts[0].kubevirt.createNamespace", why="exists already", setup=KV),
    Row("hosts[0].kubevirt.createNamespace", True, key="hosts[1].kubevirt.createNamespace", why="same namespace gpu-vms", setup=KV_SECOND),
    Row("hosts[0].kubevirt.kubevirtCr", "KubeVirt", why="lower-case", setup=KV),
    Row("hosts[0].kubevirt.kubevirtNamespace", "Kube Virt", why="lower-case", setup=KV),
    Row("hosts[0].kubevirt.featureGates", ["Live Migration"], key="hosts[0].kubevirt.featureGates[0]", why="without white space", setup=KV),
    Row("hosts[0].kubevirt.devicePlugins", "both", why="valid dictionary", setup=KV),
    Row("hosts[0].kubevirt.devicePlugins.kubevirt", ["GTX-1080"], key="hosts[0].kubevirt.devicePlugins.kubevirt[0]", why="Input should be", setup=KV),
    Row("hosts[0].kubevirt.devicePlugins.kubevirt", ["L4"], key="vms[0].gpus[0].model", why="advertised by no device plugin", setup=KV),
    Row("hosts[0].kubevirt.devicePlugins.gpuOperator", ["L40S"], key="hosts[0].kubevirt.devicePlugins.gpuOperator[0]", why="two device plugins",
        setup={**KV, "hosts[0].kubevirt.devicePlugins": {"kubevirt": ["L40S"]}}),
    Row("hosts[0].kubevirt.sidecarImage", "Sidecar Shim", why="image", setup=KV),
    Row("vms[0].gpus[0].model", "A800-SXM4-80GB", why="no vendor:device ID", setup=KV),
    Row("vms[0].kubevirt", "dedicated", why="valid dictionary", setup=KV),
    Row("vms[0].kubevirt", {"runStrategy": "Always"}, why="this block is for VMs on kind kubevirt hosts"),
    Row("vms[0].kubevirt.runStrategy", "Sometimes", why="'Always'", setup=KV),
    Row("vms[0].kubevirt.dedicatedCpus", "many", why="valid boolean", setup=KV),
    Row("vms[0].kubevirt.isolateEmulatorThread", True, why="needs kubevirt.dedicatedCpus", setup=KV),
    Row("vms[0].kubevirt.guestNuma", True, why="guestMappingPassthrough needs", setup={**KV, "vms[0].kubevirt": {"dedicatedCpus": True}}),
    Row("production", "maybe", why="valid boolean"),
    # hosts
    Row("hosts", "lab-gpu-1", why="valid tuple"),
    Row("hosts[0].name", "Lab_GPU", why="lower-case letters"),
    Row("hosts[1].kind", "libvirt", key="hosts[1].vsphere", setup=VSPHERE, why="hosts[1].kind is libvirt",
        also=("hosts[1].libvirtUri", "hosts[1].baseImage")),
    Row("hosts[0].libvirtUri", "ssh://root@lab-gpu-1/system", why="qemu"),
    Row("hosts[0].libvirtUri", "qemu+ssh://root@lab gpu/system", why="is not in the accepted form"),
    # hypervisors/libvirt/connection.py: what terraform-provider-libvirt v0.8.1's SSH client can use, and never unchecked
    Row("hosts[0].libvirtUri", "qemu+ssh://lab-gpu-1.lab.local/system", why="names no user"),
    Row("hosts[0].libvirtUri", "qemu+ssh://root@lab-gpu-1.lab.local:2222/system", why="has a port (2222)"),
    Row("hosts[0].libvirtUri", "qemu+ssh://root@lab-gpu-1.lab.local/system?no_verify=1", why="turns off the provider's host-key check"),
    Row("hosts[0].libvirtUri", "qemu+ssh://root@lab-gpu-1.lab.local/system?known_hosts_verify=ignore", why="turns off the provider's host-key check"),
    Row("hosts[0].libvirtUri", "qemu+ssh://root@lab-gpu-1.lab.local/system?keyfile=/root/.ssh/id_rsa", why="gpu-stack sets itself"),
    Row("hosts[0].hostKey", DELETE, why="ssh-keyscan -t ed25519 lab-gpu-1.lab.local"),
    Row("hosts[0].hostKey", "lab-gpu-1.lab.local ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdVSS5CpD8Tmsctnaz7bdCeCXSuvbadPScwXgccCXuh", why="without the host name"),
    Row("hosts[0].hostKey", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", why="types: ssh-ed25519"),
    Row("hosts[0].hostKey", "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIIdVSS5CpD8Tmsctnaz7bdCeCXSuvbadPScwXgccCXuh", why="is a 'ssh-ed25519' key but the line says 'ssh-rsa'"),
    Row("hosts[0].hostKey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIdVSS5CpD8Tmsctnaz7bdCeCXSuvbadPScwXgccCXu", why="not valid base64"),
    Row("hosts[0].libvirtUri", "qemu:///system", key="hosts[0].hostKey", why="only for a qemu+ssh libvirtUri"),
    Row("hosts[0].numaNodes", [], why="at least 1"),
    Row("hosts[0].numaNodes[0].id", -1, why="greater than or equal to 0"),
    Row("hosts[0].numaNodes[1].id", 0, key="hosts[0].numaNodes[1].id", why="declared twice"),
    Row("hosts[0].numaNodes[0].cpus", "0-15;32-47", why="not a CPU list"),
    Row("hosts[0].numaNodes[1].cpus", "15-31,48-63", why="also in hosts[0].numaNodes[0].cpus"),
    Row("hosts[0].numaNodes[0].memoryGib", 0, why="greater than 0"),
    Row("hosts[0].numaNodes[0].memoryGib", 32, key="hosts[0].numaNodes", why="VMs bind 64 GiB there (gpu-dev-0 64 GiB)"),
    Row("hosts[0].reservedCpus", "0,32,64", why="on none of host lab-gpu-1's NUMA nodes"),
    Row("hosts[0].reservedCpus", "0-63", key="vms[0].vcpus", why="hosts[0].reservedCpus"),
    Row("hosts[0].reservedMemoryGib", -8, why="greater than or equal to 0"),
    Row("hosts[0].reservedMemoryGib", 200, key="vms[0].memoryGib", why="hosts[0].reservedMemoryGib"),
    Row("hosts[0].physAddrBits", 40, key="vms[0].memoryGib", why="hosts[0].physAddrBits"),
    Row("hosts[0].physAddrBits", 64, why="less than or equal to 57"),
    Row("hosts[0].storagePool", "my pool", why="without white space"),
    Row("hosts[0].firmware", "ovmf", why="valid dictionary"),
    Row("hosts[0].firmware.code", "OVMF_CODE_4M.fd", why="absolute path"),
    Row("hosts[0].firmware.code", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", why="allowSecureBootWithGpus"),
    Row("hosts[0].firmware.varsTemplate", "OVMF_VARS_4M.fd", why="absolute path"),
    Row("hosts[0].firmware.secureBoot", True, key="hosts[0].firmware.code", why="hosts[0].firmware.secureBoot"),
    Row("hosts[0].baseImage", None, why="required for kind libvirt"),
    Row("hosts[0].baseImage", "noble.img", why="valid dictionary"),
    Row("hosts[0].baseImage.source", "cloud-images.ubuntu.com/noble.img", why="absolute path"),
    Row("hosts[0].baseImage.format", "vmdk", why="'qcow2' or 'raw'"),
    Row("hosts[0].threadSiblings", "0,32", why="valid tuple"),
    Row("hosts[0].threadSiblings", ["0,32,1"], key="hosts[0].threadSiblings[0]", why="lists 3 CPUs"),
    Row("hosts[0].threadSiblings", ["0,16"], key="hosts[0].threadSiblings[0]", why="one NUMA node"),
    Row("hosts[0].threadSiblings", ["0,32", "32,0"], key="hosts[0].threadSiblings[1]", why="already in another entry"),
    Row("hosts[0].libvirtVersion", "ten", why="is not in the accepted form"),
    Row("hosts[0].libvirtVersion", "5.0.0", why="<cpu/maxphysaddr> needs libvirt 8.7.0 or later"),
    Row("hosts[0].qemuVersion", "qemu-8.2.2", why="is not in the accepted form"),
    Row("hosts[0].qemuVersion", "4.1", why="<cpu/maxphysaddr> needs QEMU 4.2.0 or later"),
    # hosts, kind proxmox
    Row("hosts[0].proxmox", PROXMOX_HOST["proxmox"], why="only for kind proxmox (hosts[0].kind is libvirt)"),
    Row("hosts[1].proxmox", DELETE, setup=PROXMOX, why="required for kind proxmox"),
    Row("hosts[1].proxmox.endpoint", "http://pve-1.lab.local:8006/", setup=PROXMOX, why="https"),
    Row("hosts[1].proxmox.endpoint", "https://pve-1.lab.local:8006/api2/json", setup=PROXMOX, why="adds /api2/json itself"),
    Row("hosts[1].proxmox.insecure", "yes please", setup=PROXMOX, why="valid boolean"),
    Row("hosts[1].proxmox.node", "PVE_1", setup=PROXMOX, why="not a valid name"),
    Row("hosts[1].proxmox.datastore", "local lvm", setup=PROXMOX, why="without white space"),
    Row("hosts[1].proxmox.snippetsDatastore", "", setup=PROXMOX, why="non-empty word"),
    Row("hosts[1].proxmox.bridge", ["vmbr0"], setup=PROXMOX, why="valid string"),
    Row("hosts[1].proxmox.image", DELETE, setup=PROXMOX, why="required key is missing"),
    Row("hosts[1].proxmox.sshUser", "root user", setup=PROXMOX, why="without white space"),
    Row("hosts[1].proxmox.pveVersion", "nine", setup=PROXMOX, why="is not in the accepted form"),
    Row("hosts[1].libvirtUri", "qemu:///system", setup=PROXMOX, why="not used by kind proxmox"),
    # hosts, kind vsphere
    Row("hosts[0].vsphere", "vcenter.lab.local", why="valid dictionary"),
    Row("hosts[0].vsphere", VSPHERE_HOST["vsphere"], why="hosts[0].kind is libvirt"),
    Row("hosts[1].vsphere", DELETE, setup=VSPHERE, why="required for kind vsphere"),
    Row("hosts[1].vsphere.endpoint", "https://vcenter.lab.local/sdk", setup=VSPHERE, why="without a scheme or path"),
    Row("hosts[1].vsphere.endpoint", "", setup=VSPHERE, why="not a vCenter host name or address"),
    Row("hosts[1].vsphere.allowUnverifiedSsl", "insecure", setup=VSPHERE, why="valid boolean"),
    Row("hosts[1].vsphere.datacenter", "ha-datacenter", setup=VSPHERE, why="only through vCenter Server"),
    Row("hosts[1].vsphere.datacenter", "", setup=VSPHERE, why="not a vSphere inventory name"),
    Row("hosts[1].vsphere.cluster", "gpu\n", setup=VSPHERE, why="no control characters"),
    Row("hosts[1].vsphere.host", " 10.203.43.10", setup=VSPHERE, why="no leading or trailing white space"),
    Row("hosts[1].vsphere.datastore", ["datastore1"], setup=VSPHERE, why="valid string"),
    Row("hosts[1].vsphere.network", "   ", setup=VSPHERE, why="not a vSphere inventory name"),
    Row("hosts[1].vsphere.folder", "/lab/vm/gpu", setup=VSPHERE, why="relative to the datacenter's vm folder"),
    Row("hosts[1].vsphere.folder", "gpu//k8s", setup=VSPHERE, why="doubled '/'"),
    Row("hosts[1].vsphere.template", "almalinux-9.6-cloud-template", setup=VSPHERE, why="valid dictionary"),
    Row("hosts[1].vsphere.template", {}, setup=VSPHERE, why="set exactly one of hosts[1].vsphere.template.vm"),
    Row("hosts[1].vsphere.template.vm", "", setup=VSPHERE, why="not a vSphere inventory name"),
    Row("hosts[1].vsphere.template.ovf", "http://mirror.lab.local/images/alma-9.6.ova", key="hosts[1].vsphere.template",
        setup=VSPHERE, why="set exactly one of hosts[1].vsphere.template.vm"),
    Row("hosts[1].vsphere.template.ovf", "mirror.lab.local/images/alma-9.6.ova", setup=OVF, why="http:// or https://"),
    Row("hosts[1].vsphere.template.ovfNetwork", "nat\t", setup=OVF, why="no control characters"),
    Row("hosts[1].vsphere.pciDevices", [], setup=VSPHERE, why="at least 1"),
    Row("hosts[1].vsphere.pciDevices", ["0000:03:00.0", "03:00.0"], key="hosts[1].vsphere.pciDevices[1]", setup=VSPHERE, why="PCI address"),
    # vms
    Row("vms", {"name": "gpu-dev-0"}, why="valid tuple"),
    Row("vms[0].name", "GPU dev", why="lower-case letters"),
    Row("vms[1].name", "gpu-dev-0", setup={"vms[1]": SECOND_VM}, why="used twice"),
    Row("vms[0].host", "lab-gpu-9", why="declared hosts"),
    Row("vms[0].vcpus", 0, why="greater than 0"),
    Row("vms[0].vcpus", 63, why="62 CPUs"),
    Row("vms[0].memoryGib", 250, why="248 GiB"),
    Row("vms[0].memoryGib", "lots", why="valid integer"),
    Row("vms[0].diskGib", 19, why="greater than or equal to 20"),
    Row("vms[0].diskGib", 40, why="at least 57 GiB"),
    Row("vms[0].network", [], why="valid dictionary"),
    Row("vms[0].network.name", "", why="non-empty"),
    Row("vms[0].network.mac", "52:54:00:zz:00:01", why="six hex octets"),
    Row("vms[0].network.mac", "01:00:5e:00:00:01", why="multicast"),
    Row("vms[1].network.mac", "52:54:00:AA:BB:CC", setup={"vms[1]": SECOND_VM, "vms[0].network.mac": "52:54:00:aa:bb:cc"}, why="case-insensitively"),
    Row("vms[1].network.mac", derived_mac("dev", "gpu-dev-0"), setup={"vms[1]": SECOND_VM}, why="derived for vms[0]"),
    Row("vms[0].network.address", "192.168.122.300", why="octets 0-255"),
    Row("vms[0].network.address", "192.168.122", why="IPv4 address"),
    Row("vms[1].network.address", "192.168.122.10", setup={"vms[1]": SECOND_VM, "vms[0].network.address": "192.168.122.10"}, why="also the address of vms[0]"),
    Row("vms[0].network.address", "10.244.1.5", key="kubernetes.podCidr", why="vms[0].network.address"),
    Row("vms[0].network.waitForLease", "sometimes", why="valid boolean"),
    Row("vms[0].gpus", "0000:3b:00.0", why="valid tuple"),
    Row("vms[0].gpus[0].address", "3b:00.0", why="0000:17:00.0"),
    Row("vms[0].gpus[1]", {"address": "0000:3B:00.0", "model": "L40S", "numaNode": 0}, key="vms[0].gpus[1].address", why="already assigned"),
    Row("vms[0].gpus[0].model", "H900", why="H800-SXM5-80GB"),
    Row("vms[0].gpus[0].numaNode", 7, why="no NUMA node 7"),
    Row("vms[0].gpus[0].numaNode", DELETE, why="set the node this device sits on"),
    Row("vms[0].gpus[0].bar1Gib", 0, why="greater than 0"),
    Row("vms[0].nvswitches", {}, why="valid tuple"),
    Row("vms[0].nvswitches[0].address", "05:00", setup=SWITCH, why="PCI address"),
    Row("vms[0].nvswitches[0].model", "NVSwitch-Gen9", setup=SWITCH, why="NVSwitch-Gen3"),
    Row("vms[0].nvswitches[0].numaNode", 5, setup=SWITCH, why="no NUMA node 5"),
    Row("vms[0].nvswitches[0].barMib", -1, setup=SWITCH, why="greater than 0"),
    Row("vms[0].gpus", [], key="vms[0].nvswitches", setup=SWITCH, why="without GPUs"),
    # issue 29 part 3: NVSwitches against the board of the VM's GPUs (config/catalog.py NVSWITCH_BOARD)
    Row("vms[0].nvswitches", SWITCHES4[:1], why="L40S is a PCIe card with no NVSwitch baseboard"),
    Row("vms[0].nvswitches", SWITCHES4[:3], setup=SWITCH, why="get 4 NVSwitches in full passthrough, this VM has 3"),
    Row("vms[0].gpus", H100S[:2], key="vms[0].nvswitches", setup=SWITCH, why="no partition of 2 GPUs with NVSwitches"),
    Row("vms[0].nvswitches[0].model", "NVSwitch-Gen2", setup=SWITCH, why="whose NVSwitches are NVSwitch-Gen3"),
    Row("vms[0].firmware", True, why="valid dictionary"),
    Row("vms[0].firmware.type", "uefi", why="'efi' or 'bios'"),
    Row("vms[0].firmware.type", "bios", why="libvirt VMs boot OVMF"),
    Row("vms[0].firmware.secureBoot", True, why="hosts[].firmware.code"),
    Row("vms[0].firmware.secureBoot", "on and off", why="valid boolean"),
    Row("vms[0].firmware.allowSecureBootWithGpus", "perhaps", why="valid boolean"),
    Row("vms[0].numa", "node0", why="valid dictionary"),
    Row("vms[0].numa.hostNodes", [3], why="no NUMA node 3"),
    Row("vms[0].numa.cells", [{"hostNode": 0, "vcpus": 4, "memoryGib": 32}], why="must be equal"),
    Row("vms[0].numa.cells[0].hostNode", 4, setup=CELLS, why="no NUMA node 4"),
    Row("vms[0].numa.cells[0].vcpus", 0, setup=CELLS, why="greater than 0"),
    Row("vms[0].numa.cells[0].memoryGib", 0, setup=CELLS, why="greater than 0"),
    Row("vms[0].numa.cells[0].hostCpus", "1-4,16-19", setup=CELLS, why="are not on host lab-gpu-1 NUMA node 0"),
    Row("vms[0].numa.cells[0].hostCpus", "0-7", setup=CELLS, why="reserved or already pinned"),
    Row("vms[0].numa.hugepages1g", "2M", why="valid boolean"),
    Row("vms[0].numa.exposeGpuAffinity", "yes please", why="valid boolean"),
    Row("vms[0].mmioHole64Gib", 64, why="at least 128 GiB"),
    Row("vms[0].mmioHole64Gib", 192, why="power of two"),
    Row("vms[0].kvmHidden", "hidden", why="valid boolean"),
    Row("vms[0].vsphere", "high", why="valid dictionary"),
    Row("vms[0].vsphere", {}, why="is kind libvirt"),
    Row("vms[0].vsphere.numCoresPerSocket", 0, why="greater than 0"),
    Row("vms[0].vsphere.latencySensitivity", "extreme", why="'low', 'normal', 'medium' or 'high'"),
    Row("vms[0].vsphere.guestId", "AlmaLinux 9 (64-bit)", why="not a vSphere guest OS id"),
    # guest
    Row("guest", "ubuntu", why="valid dictionary"),
    Row("guest", DELETE, why="no guest block"),
    Row("guest.os", "ubuntu-24.04", why="valid dictionary"),
    Row("guest.os.family", "debian", why="'ubuntu' or 'rhel'"),
    Row("guest.os.version", "9", why="accepted: 22.04, 24.04"),
    Row("guest.sshUser", "", why="useradd"),
    Row("guest.sshUser", "   ", why="useradd"),
    Row("guest.sshUser", "ops admin", why="useradd"),
    Row("guest.sshPublicKey", "AAAAC3NzaC1lZDI1NTE5", why="is not in the accepted form"),
    Row("guest.sshPublicKey", "ssh-ed25519 AAAAC3Nza ops\nssh-rsa AAAAB3Nza other", why="is not in the accepted form"),
    Row("guest.minRootFreeGib", 0, why="greater than or equal to 1"),
    Row("guest.minRootFreeGib", 500, key="vms[0].diskGib", why="guest.minRootFreeGib (500 GiB)"),
    Row("guest.nvidia", {}, key="guest.nvidia.driverVersion", why="required"),
    Row("guest.nvidia.driverVersion", "latest", why="is not in the accepted form"),
    Row("guest.nvidia.driverVersion", "570.172", why="for example '570.172.08'"),
    Row("guest.nvidia.installMethod", "apt", why="'package' or 'runfile'"),
    Row("guest.nvidia.installMethod", "runfile", key="guest.nvidia.runfileUrl", why="NVIDIA-Linux-x86_64"),
    Row("guest.nvidia.runfileUrl", "NVIDIA-Linux-x86_64-570.172.08.run", why="absolute path"),
    Row("guest.nvidia.kernelModules", "nouveau", why="'open' or 'proprietary'"),
    Row("guest.nvidia.kernelModules", "open", setup=PASCAL, why="first in Turing"),
    Row("guest.nvidia.cuda", "12.8", why="valid dictionary"),
    Row("guest.nvidia.cuda.version", "12.8", setup=CUDA, why="MAJOR.MINOR.PATCH"),
    Row("guest.nvidia.cuda.runfileUrl", "cuda_12.8.1_linux.run", setup=CUDA, why="absolute path"),
    Row("guest.containerRuntime", "containerd", why="valid dictionary"),
    Row("guest.containerRuntime.name", "cri-o", why="'containerd' or 'docker'"),
    Row("guest.containerRuntime.name", "docker", why="kubernetes.version"),
    Row("guest.containerRuntime.nvidiaToolkitVersion", "1.17", why="MAJOR.MINOR.PATCH"),
    Row("guest.containerRuntime.nvidiaDefault", "nvidia", why="valid boolean"),
    Row("guest.containerRuntime.dockerRepository", "download.docker.com/linux", why="http:// or https://"),
    Row("guest.containerRuntime.dockerRepository", "https://download.docker.com/linux/", why="without it"),
    Row("guest.repositories", "https://mirror.lab.local", why="valid dictionary"),
    Row("guest.repositories.nvidiaContainerToolkit", "nvidia.github.io/libnvidia-container", why="http:// or https://"),
    Row("guest.repositories.nvidiaContainerToolkit", "https://nvidia.github.io/libnvidia-container/", why="without it"),
    Row("guest.repositories.cuda", "developer.download.nvidia.com/compute/cuda/repos", why="http:// or https://"),
    Row("guest.repositories.cuda", "https://mirror.lab.local/cuda/repos/", why="without it"),
    Row("guest.proxy", "http://proxy.lab.local:3128", why="valid dictionary"),
    Row("guest.proxy.http", "proxy.lab.local:3128", why="http:// or https://"),
    Row("guest.proxy.https", "100.64.0.5:8888", setup=PROXY, why="http:// or https://"),
    Row("guest.proxy.noProxy", "localhost,.svc", setup=PROXY, why="valid tuple"),
    Row("guest.proxy.noProxy", ["localhost", "10.0.0.0/8, .svc"], key="guest.proxy.noProxy[1]", setup=PROXY, why="without spaces or commas"),
    Row("guest.registryMirrors", {"nvcr.io": "https://harbor"}, why="valid tuple"),
    Row("guest.registryMirrors[0].registry", "https://nvcr.io", setup=MIRROR, why="without a scheme"),
    Row("guest.registryMirrors[0].endpoint", "harbor.lab.local/v2/nvcr", setup=MIRROR, why="http:// or https://"),
    # issue 29: no URL-valued key takes user:password@; the refusal names the secret to use instead
    Row("guest.proxy.http", "http://svc:pw@proxy.lab.local:3128", why="gpu-stack:proxyPassword"),
    Row("guest.proxy.https", "http://svc@proxy.lab.local:3128", setup=PROXY, why="guest.proxy.username"),
    Row("guest.proxy.username", "svc gpu", setup=PROXY, why="without white space"),
    Row("guest.proxy.username", "svc", key="proxyPassword", setup=PROXY, why="guest.proxy.username is set"),
    Row("guest.proxy.username", "svc", key="guest.proxy.username", setup={"guest.proxy": {"noProxy": ["localhost"]}},
        also=("proxyPassword",), why="neither http nor https"),
    Row("guest.registryMirrors[0].endpoint", "https://robot:pw@harbor.lab.local/v2/nvcr", setup=MIRROR, why="gpu-stack:registryPassword"),
    Row("guest.repositories.cuda", "https://robot:pw@mirror.lab.local/cuda/repos", why="gpu-stack:repositoryPassword"),
    Row("guest.repositories.nvidiaContainerToolkit", "https://robot:pw@mirror.lab.local/nct", why="gpu-stack:repositoryPassword"),
    Row("guest.containerRuntime.dockerRepository", "https://robot:pw@mirror.lab.local/docker/linux", why="gpu-stack:repositoryPassword"),
    Row("kubernetes.packageRepository", "https://robot:pw@mirror.lab.local/k8s", why="gpu-stack:repositoryPassword"),
    Row("guest.nvidia.runfileUrl", "https://robot:pw@mirror.lab.local/NVIDIA-Linux-x86_64-570.172.08.run", why="gpu-stack:repositoryPassword"),
    Row("guest.nvidia.cuda.runfileUrl", "ftp://robot:pw@mirror.lab.local/cuda_12.8.1_linux.run", setup=CUDA, why="gpu-stack:repositoryPassword"),
    Row("guest.repositoryUsername", "robot mirror", why="without white space"),
    Row("guest.repositoryUsername", "robot", key="guest.repositoryUsername", also=("repositoryPassword",), why="no mirror is configured"),
    Row("guest.repositoryUsername", "robot", key="repositoryPassword", setup={"kubernetes.packageRepository": "https://mirror.lab.local/k8s"},
        why="guest.repositoryUsername is set"),
    Row("hosts[0].libvirtUri", "qemu+ssh://root:pw@lab-gpu-1.lab.local/system", why="hypervisorSshPrivateKey"),
    Row("hosts[0].baseImage.source", "https://u:pw@cloud-images.lab.local/noble.img", why="serve it where none are needed"),
    Row("hosts[0].kubevirt.rootDisk.url", "https://u:pw@images.lab.local/noble.img", setup=KV, why="serve it where none are needed"),
    Row("hosts[1].vsphere.template.ovf", "http://u:pw@mirror.lab.local/images/alma-9.6.ova", setup=OVF, why="serve it where none are needed"),
    Row("hosts[1].vsphere.endpoint", "administrator:pw@vcenter.lab.local", setup=VSPHERE, why="gpu-stack:vspherePassword"),
    Row("guest.registryUsername", "robot user", why="without white space"),
    Row("guest.registryUsername", "robot", key="registryPassword", why="guest.registryUsername"),
    Row("guest.selinux", "disabled", why="'enforcing' or 'permissive'"),
    Row("guest.disableFirewalld", "off please", why="valid boolean"),
    # kubernetes
    Row("kubernetes", ["1.32.4"], why="valid dictionary"),
    Row("kubernetes.version", "1.32", why="MAJOR.MINOR.PATCH"),
    Row("kubernetes.mode", "standalone", why="'init', 'join' or 'existing'"),
    Row("kubernetes.pastEndOfSupport", "legacy", why="at least 10 characters"),
    Row("kubernetes.pastEndOfSupport", "kept because\nthe cluster", why="is not in the accepted form"),
    Row("kubernetes.mode", "existing", key="kubeconfig", why="mode existing"),
    Row("kubernetes.join", "cp:6443", why="valid dictionary"),
    Row("kubernetes.join.controlPlaneEndpoint", "https://cp.lab.local", setup=JOIN, why="is not in the accepted form"),
    Row("kubernetes.join.caCertHash", "ab" * 32, setup=JOIN, why="is not in the accepted form"),
    Row("kubernetes.podCidr", "10.244.0.0/33", why="CIDR notation"),
    Row("kubernetes.podCidr", "not-a-cidr", why="CIDR notation"),
    Row("kubernetes.podCidr", "10.244.0.1/16", why="did you mean 10.244.0.0/16"),
    Row("kubernetes.podCidr", "10.96.0.0/16", why="overlaps kubernetes.serviceCidr"),
    Row("kubernetes.podCidr", "192.168.0.0/16", why="libvirt's default network"),
    Row("kubernetes.serviceCidr", "10.96.0.0", why="CIDR notation"),
    Row("kubernetes.serviceCidr", "192.168.122.0/26", why="libvirt's default network"),
    Row("kubernetes.joinTokenTtl", "2 hours", why="is not in the accepted form"),
    Row("kubernetes.joinTokenTtl", "0h", why="is not in the accepted form"),
    Row("kubernetes.bootstrapTokenRotation", -1, why="was removed: gpu-stack no longer derives a never-expiring bootstrap token"),
    Row("kubernetes.bootstrapTokenRotation", 24, why="kubernetes.joinTokenTtl"),
    Row("kubernetes.packageRepository", "pkgs.k8s.io/core:/stable:/v1.32", why="http:// or https://"),
    Row("kubernetes.nodeLabels", ["nvidia.com/gpu.present=true"], why="valid dictionary"),
    Row("kubernetes.nodeLabels", {"gpu present": "true"}, key="kubernetes.nodeLabels.gpu present", why="1-63 characters"),
    Row("kubernetes.nodeLabels", {"Example.com/gpu": "true"}, key="kubernetes.nodeLabels.Example.com/gpu", why="DNS-1123 subdomain"),
    Row("kubernetes.nodeLabels", {"a" * 64: "true"}, key=f"kubernetes.nodeLabels.{'a' * 64}", why="1-63 characters"),
    Row("kubernetes.nodeLabels", {"example.com/gpu": "yes please"}, key="kubernetes.nodeLabels.example.com/gpu", why="label value"),
    Row("kubernetes.nodeLabels", {"node-role.kubernetes.io/gpu": ""}, key="kubernetes.nodeLabels.node-role.kubernetes.io/gpu", why="kubelet refuses"),
    Row("kubernetes.nodeTaints", {"key": "nvidia.com/gpu"}, why="valid tuple"),
    Row("kubernetes.nodeTaints", [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}], why="CoreDNS"),
    Row("kubernetes.nodeTaints[0].key", "nvidia.com/gpu present", setup=TAINT, why="1-63 characters"),
    Row("kubernetes.nodeTaints[0].value", "true!", setup=TAINT, why="label value"),
    Row("kubernetes.nodeTaints[0].effect", "NoRun", setup=TAINT, why="'NoSchedule', 'PreferNoSchedule' or 'NoExecute'"),
    # add-ons
    Row("addons", [], why="valid dictionary"),
    Row("addons.podNetwork", "calico", why="valid dictionary"),
    Row("addons.podNetwork.enabled", "calico", why="valid boolean"),
    Row("addons.podNetwork.version", "3.32.1", why="is not in the accepted form"),
    Row("addons.podNetwork.encapsulation", "Geneve", why="'VXLANCrossSubnet', 'VXLAN', 'IPIPCrossSubnet', 'IPIP' or 'None'"),
    Row("addons.devicePlugin", "on", why="valid dictionary"),
    Row("addons.devicePlugin.enabled", False, key="addons", why="no device plugin is enabled"),
    Row("addons.devicePlugin.enabled", "on and off", why="valid boolean"),
    Row("addons.devicePlugin.version", "0.99.0", why="not in the compatibility table"),
    Row("addons.devicePlugin.version", "0.16.2", why="kubernetes.version 1.36.5"),
    Row("addons.devicePlugin.deploy", "kustomize", why="'helm' or 'static'"),
    Row("addons.devicePlugin.namespace", "NVIDIA", why="lower-case letters"),
    Row("addons.devicePlugin.timeSlicing", 4, why="valid dictionary"),
    Row("addons.devicePlugin.timeSlicing.replicas", 1, why="greater than or equal to 2"),
    Row("addons.devicePlugin.timeSlicing.renameByDefault", "rename", why="valid boolean"),
    Row("addons.devicePlugin.timeSlicing.failRequestsGreaterThanOne", "fail", why="valid boolean"),
    Row("addons.devicePlugin.migStrategy", "all", why="'none', 'single' or 'mixed'"),
    Row("addons.devicePlugin.migStrategy", "mixed", key="addons.devicePlugin.timeSlicing", why="not supported"),
    Row("addons.devicePlugin.failOnInitError", "crash", why="valid boolean"),
    Row("addons.gpuOperator", "v26.7.0", why="valid dictionary"),
    Row("addons.gpuOperator.enabled", True, key="addons.devicePlugin.enabled", why="devicePluginEnabled: false"),
    Row("addons.gpuOperator.version", "26.7.0", setup=OPERATOR, why="is not in the accepted form"),
    Row("addons.gpuOperator.namespace", "gpu_operator", setup=OPERATOR, why="lower-case letters"),
    Row("addons.gpuOperator.devicePluginEnabled", False, key="addons", setup=OPERATOR, why="no device plugin is enabled"),
    Row("addons.gpuOperator.migManagerEnabled", "mig", setup=OPERATOR, why="valid boolean"),
    Row("addons.gpuOperator.migStrategy", "multi", setup=OPERATOR, why="'none', 'single' or 'mixed'"),
    Row("addons.gpuOperator.dcgmExporterVersion", "4.5.3", setup=OPERATOR, why="is not in the accepted form"),
    Row("addons.monitoring", True, why="valid dictionary"),
    Row("addons.monitoring.enabled", "prometheus", why="valid boolean"),
    Row("addons.monitoring.releaseName", "Kube Prometheus", why="lower-case letters"),
    Row("addons.monitoring.namespace", "", why="lower-case letters"),
    Row("addons.monitoring.chartVersion", "latest", why="MAJOR.MINOR.PATCH"),
    Row("addons.monitoring.retention", "15 days", why="is not in the accepted form"),
    Row("addons.monitoring.storageGib", 0, why="greater than or equal to 1"),
    Row("addons.monitoring.storageClass", "Fast SSD", why="DNS-1123 subdomain"),
    Row("addons.monitoring.defaultStorageClassExists", "perhaps", why="valid boolean"),
    Row("addons.monitoring.serviceMonitorSelectorNilUsesHelmValues", "nil", why="valid boolean"),
    Row("addons.monitoring.dcgmExporterImageTag", ":4.5.3", why="image tag"),
    Row("addons.monitoring.driftCheck", {"enable": True}, key="addons.monitoring.driftCheck.enable", why="accepted here: enabled, intervalSeconds"),
    Row("addons.monitoring.driftCheck.enabled", "sometimes", why="valid boolean"),
    Row("addons.monitoring.driftCheck.intervalSeconds", 10, why="greater than or equal to 60"),
    Row("addons.gpuQuotas", {"namespace": "ml-dev"}, why="valid tuple"),
    Row("addons.gpuQuotas[0].namespace", "ML dev", why="lower-case letters"),
    Row("addons.gpuQuotas[1]", {"namespace": "ml-dev", "gpus": 1}, key="addons.gpuQuotas[1].namespace", why="listed twice"),
    Row("addons.gpuQuotas[0].gpus", -1, why="greater than or equal to 0"),
    Row("addons.gpuQuotas[0].defaultRequest", 5, why="exceeds the quota of 4"),
    Row("addons.gpuQuotas[0].createNamespace", "create", why="valid boolean"),
    Row("addons.images", "harbor.lab.local", why="valid dictionary"),
    Row("addons.images.registry", "https://harbor.lab.local", why="is not in the accepted form"),
    Row("addons.images.overrides", ["harbor.lab/k8s-device-plugin"], why="valid dictionary"),
    Row("addons.images.overrides", {"nvcr.io/nvidia/k8s-device-plugin": "harbor.lab/k8s/k8s-device-plugin:v0.20.0"},
        key="addons.images.overrides.nvcr.io/nvidia/k8s-device-plugin", why="the tag comes from the add-on version"),
    Row("addons.images.overrides", {"nvcr.io/NVIDIA/k8s-device-plugin": "harbor.lab/k8s/k8s-device-plugin"},
        key="addons.images.overrides.nvcr.io/NVIDIA/k8s-device-plugin", why="not an image repository"),
    Row("addons.images.smokeTest", "nvcr.io/nvidia/cuda", why="has no tag"),
    Row("addons.images.smokeTest", "nvcr.io/nvidia/cuda:12.8.1 base", why="not an image reference"),
    Row("addons.images.pullSecret", "Harbor_Pull", why="DNS-1123 subdomain"),
    Row("addons.smokeTest", "nvidia-smi", why="valid boolean"),
    # fleet (day 2 rollouts)
    Row("fleet", [1], why="valid dictionary"),
    Row("fleet.maxUnavailable", 0, why="greater than or equal to 1"),
    Row("fleet.maxUnavailable", 2, why="more than the 1 VM of this stack"),
    Row("fleet.drainTimeoutSeconds", 5, why="greater than or equal to 30"),
    Row("fleet.drainedExternally", "sometimes", why="valid boolean"),
    # the burn-in gate (issue 27)
    Row("burnIn", "on", why="valid dictionary"),
    Row("burnIn.enabled", "yes please", why="valid boolean"),
    Row("burnIn.dcgmLevel", 0, why="greater than or equal to 1"),
    Row("burnIn.dcgmLevel", 5, why="less than or equal to 4"),
    Row("burnIn.nccl", "allreduce", why="valid boolean"),
    Row("burnIn.minBusbwFraction", 0, why="greater than 0"),
    Row("burnIn.minBusbwFraction", 80, why="less than or equal to 1"),
    Row("burnIn.expectedBusbwGbps", {"H100-SXM5-80GB": -5}, key="burnIn.expectedBusbwGbps.H100-SXM5-80GB", why="greater than 0"),
    Row("burnIn.expectedBusbwGbps", {"H100": 400}, key="burnIn.expectedBusbwGbps.H100", why="H100-SXM5-80GB"),
    Row("burnIn.expectedBusbwGbps", {}, why="no sourced all-reduce busbw for 2 GPUs",
        setup={"vms[0].gpus[1]": {"address": "0000:3c:00.0", "model": "L40S", "numaNode": 0}, "addons.devicePlugin.timeSlicing": DELETE,
               "burnIn.expectedBusbwGbps": {"L40S": 20}}),
    Row("burnIn.dcgmImage", "nvcr.io/nvidia/cloud-native/dcgm", why="has no tag"),
    Row("burnIn.ncclImage", "nccl tests", why="not an image reference"),
    Row("burnIn.timeoutSeconds", 10, why="greater than or equal to 60"),
)


def _parts(path: str) -> list[str | int]:
    out: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        out.append(int(index) if index else name)
    return out


def set_path(doc: dict, path: str, value: Any) -> None:
    """Set (or delete) one path, creating the mappings and the next list entry on the way."""
    parts = _parts(path)
    node: Any = doc
    for part, nxt in zip(parts, parts[1:]):
        if isinstance(part, int):
            if part == len(node):
                node.append({})
            node = node[part]
        else:
            if node.get(part) is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(last, int) and last == len(node):
        node.append(copy.deepcopy(value))
    else:
        node[last] = copy.deepcopy(value)


def mutated(row: Row) -> dict:
    doc = stack_file("dev")
    for path, value in row.setup.items():
        set_path(doc, path, value)
    set_path(doc, row.path, row.value)
    return doc


def issues_of(raw: dict) -> list:
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, SECRETS, "dev")
    return info.value.issues


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_refused_at_the_key(row):
    issues = issues_of(mutated(row))
    at_key = [i for i in issues if i.path == row.expected]
    assert at_key, f"expected gpu-stack:{row.expected}, got {[str(i) for i in issues]}"
    assert any(row.why in i.message for i in at_key), f"{row.why!r} not in {[i.message for i in at_key]}"
    assert {i.path for i in issues} == {row.expected, *row.also}, f"other keys reported too: {[str(i) for i in issues]}"


@pytest.mark.parametrize("row", [r for r in ROWS if r.why == "is not in the accepted form"], ids=lambda r: r.id)
def test_a_value_of_the_wrong_form_gets_an_example_that_is_accepted(row):
    """A regular expression alone tells a user little: the message also gives a value of the accepted form, and it is one."""
    import re

    [issue] = [i for i in issues_of(mutated(row)) if i.path == row.expected]
    m = re.search(r"is not in the accepted form (\^.*?\$), for example '(.+)'$", issue.message)
    assert m, issue.message
    assert re.match(m.group(1), m.group(2)), f"the example {m.group(2)!r} does not match {m.group(1)}"


@pytest.mark.parametrize("row", [r for r in ROWS if r.setup], ids=lambda r: r.id)
def test_setups_are_valid_on_their_own(row):
    doc = stack_file("dev")
    for path, value in row.setup.items():
        set_path(doc, path, value)
    parse_stack_config(doc, SECRETS, "dev")


def _resolve(schema: dict, defs: dict) -> dict:
    if "$ref" in schema:
        return defs[schema["$ref"].rsplit("/", 1)[1]]
    options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    return _resolve(options[0], defs) if len(options) == 1 else schema


def schema_fields(schema: dict, defs: dict, prefix: str = ""):
    """Every property path of the schema: objects descend with '.', lists of objects with '[]'."""
    for name, sub in _resolve(schema, defs).get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        inner = _resolve(sub, defs)
        if "properties" in inner:
            yield from schema_fields(inner, defs, path)
        elif inner.get("type") == "array" and "properties" in _resolve(inner.get("items", {}), defs):
            yield from schema_fields(_resolve(inner["items"], defs), defs, path + "[]")


def test_every_schema_field_has_a_row():
    schema = StackConfig.model_json_schema(by_alias=True, mode="validation")
    fields = list(schema_fields(schema, schema.get("$defs", {})))
    assert len(fields) > 100
    covered = {re.sub(r"\[\d+\]", "[]", re.sub(r"\[\d+\]$", "", r.path)) for r in ROWS}
    missing = [f for f in fields if f not in covered]
    assert not missing, f"schema fields without a refused value in tests/test_bad_input.py ROWS: {missing}"
    removed = {".".join(path) for path in REMOVED_KEYS}  # no longer in the schema, refused by name
    assert removed <= covered, f"removed keys without a row: {sorted(removed - covered)}"
    unknown = sorted(covered - set(fields) - removed)
    assert not unknown, f"rows for paths the schema does not have: {unknown}"


def test_the_dev_stack_itself_is_accepted():
    parse_stack_config(stack_file("dev"), SECRETS, "dev")


@pytest.mark.parametrize("guest_id", ["rhel9_64Guest", "ubuntu64Guest", "otherLinux64Guest", "otherGuest64"])
def test_vsphere_names_as_vcenter_shows_them_are_accepted(guest_id):
    """The inventory checks refuse only what vCenter cannot name: names with spaces, paths, addresses pass."""
    doc = stack_file("dev")
    set_path(doc, "hosts[1]", VSPHERE_HOST)
    set_path(doc, "hosts[1].vsphere.cluster", "GPU Cluster")
    set_path(doc, "hosts[1].vsphere.folder", "gpu/k8s nodes")
    set_path(doc, "hosts[1].vsphere.datacenter", "labs/Lab 1")
    set_path(doc, "vms[1]", dict(SECOND_VM, host="esxi-1", gpus=[{"address": "0000:03:00.0", "model": "P100-PCIE-16GB", "numaNode": 0}],
                                 vsphere={"guestId": guest_id, "numCoresPerSocket": 4}))
    cfg, _ = parse_stack_config(doc, SECRETS | {"vsphereUser", "vspherePassword"}, "dev")
    target = cfg.hosts[1].vsphere
    assert (target.cluster, target.folder, target.datacenter) == ("GPU Cluster", "gpu/k8s nodes", "labs/Lab 1")
    assert cfg.vms[1].vsphere.guest_id == guest_id


def test_two_derived_macs_that_collide_are_refused():
    """gpu-1011 and gpu-5617 hash to the same 52:54:00:bb:6e:be in stack dev (24 bits of SHA-256)."""
    assert derived_mac("dev", "gpu-1011") == derived_mac("dev", "gpu-5617")
    raw = stack_file("dev")
    raw["vms"][0]["name"] = "gpu-1011"
    raw["vms"].append(dict(SECOND_VM, name="gpu-5617"))
    (issue,) = issues_of(raw)
    assert issue.path == "vms[1].network.mac" and "hash collision" in issue.message and "vms[0] (gpu-1011)" in issue.message
    parse_stack_config(raw, SECRETS, "prod")  # another stack derives other MACs


# --- the PCIe topology: at the limit, and one past it -------------------------


def _many_devices_raw(per_node: int, nodes: int, affinity: bool) -> dict:
    raw = stack_file("dev")
    raw["hosts"][0].update(physAddrBits=52, reservedCpus="", numaNodes=[
        {"id": n, "cpus": f"{n * 8}-{n * 8 + 7}", "memoryGib": 64} for n in range(nodes)])
    vm = raw["vms"][0]
    vm.update(vcpus=nodes, memoryGib=4 * nodes)
    count = per_node * nodes
    vm["gpus"] = [{"address": f"0000:{1 + i // 32:02x}:{i % 32:02x}.0", "model": "T4", "numaNode": i % nodes} for i in range(count)]
    if affinity:
        vm["numa"] = {"exposeGpuAffinity": True}
    return raw


def test_expander_layout_at_its_limit_is_accepted():
    parse_stack_config(_many_devices_raw(MAX_PORTS_PER_EXPANDER, MAX_EXPANDERS, True), SECRETS)


def test_one_device_past_an_expander_is_refused():
    raw = _many_devices_raw(MAX_PORTS_PER_EXPANDER, MAX_EXPANDERS, True)
    raw["vms"][0]["gpus"].append({"address": "0000:7f:00.0", "model": "T4", "numaNode": 0})
    (issue,) = issues_of(raw)
    assert issue.path == "vms[0].gpus"
    assert f"32 devices on guest NUMA cell 0" in issue.message and f"at most {MAX_PORTS_PER_EXPANDER}" in issue.message


def test_one_expander_too_many_is_refused():
    (issue,) = issues_of(_many_devices_raw(1, MAX_EXPANDERS + 1, True))
    assert issue.path == "vms[0].gpus" and f"at most {MAX_EXPANDERS} fit" in issue.message


def test_200_gpus_behind_expanders_are_refused_with_the_limit():
    issues = issues_of(_many_devices_raw(100, 2, True))
    assert [i.path for i in issues] == ["vms[0].gpus", "vms[0].gpus"]
    assert "100 devices on guest NUMA cell 0" in issues[0].message and "at most 31" in issues[0].message
    assert "100 devices on guest NUMA cell 1" in issues[1].message


def test_pcie_root_at_its_limit_is_accepted_and_one_past_refused():
    parse_stack_config(_many_devices_raw(MAX_ROOT_HOSTDEVS, 1, False), SECRETS)
    (issue,) = issues_of(_many_devices_raw(MAX_ROOT_HOSTDEVS + 1, 1, False))
    assert issue.path == "vms[0].gpus" and f"at most {MAX_ROOT_HOSTDEVS}" in issue.message


# --- secrets in the stack file --------------------------------------------------


def _write_stack(tmp_path, doc: Any, name: str = "bad") -> None:
    (tmp_path / f"Pulumi.{name}.yaml").write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))


def _plan(tmp_path, capsys, name: str = "bad") -> tuple[int, str]:
    rc = plan_tool.main([name, "--out", str(tmp_path / "plan"), "--stack-dir", str(tmp_path)])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_plan_refuses_a_plaintext_secret_as_the_program_does(tmp_path, capsys, key):
    from tests.conftest import run_stack

    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"][f"gpu-stack:{key}"] = "plain-text-value"
    _write_stack(tmp_path, doc)
    rc, err = _plan(tmp_path, capsys)
    assert rc == 1
    expected = f"gpu-stack:{key}: is stored in plain text in the stack file; remove it and run `pulumi config set --secret gpu-stack:{key}`"
    assert err.splitlines() == [expected]
    assert not (tmp_path / "plan" / "bad").exists()
    # the program, given the same value as plain (not secret) config, refuses it with the same line
    raw = stack_file("dev")
    raw[key] = "plain-text-value"
    secrets = {k: "x" for k in ("sshPrivateKey", "grafanaAdminPassword") if k != key}
    with pytest.raises(ConfigError) as info:
        run_stack(raw, secrets=secrets)
    assert [str(i) for i in info.value.issues] == [expected]


# --- malformed files: refused naming the file, never a traceback ---------------------


MALFORMED = {
    "tab-indent": ("config:\n\tgpu-stack:production: false\n", "(file)", "tabs"),
    "not-utf8": (b"config:\n  gpu-stack:production: false # \xff\xfe\n", "(file)", "not UTF-8"),
    "config-a-list": ("config:\n  - gpu-stack:production: false\n", "(file)", "`config:` is a list"),
    "scalar-file": ("just some text\n", "(file)", "holds a string, not a mapping"),
    "list-file": ("- a\n- b\n", "(file)", "holds a list"),
    "unclosed-quote": ("config:\n  gpu-stack:production: 'false\n", "(file)", "line"),
    "empty-file": ("", "vms", "declares nothing to build"),
    "empty-config": ("config: {}\n", "vms", "declares nothing to build"),
    "no-config": ("encryptionsalt: v1:abc\n", "vms", "declares nothing to build"),
    "config-null": ("config:\n", "vms", "declares nothing to build"),
    "vms-a-number": ("config:\n  gpu-stack:vms: 5\n", "vms", "valid tuple"),
    "hosts-a-string": ("config:\n  gpu-stack:hosts: lab-gpu-1\n  gpu-stack:vms: []\n", "hosts", "valid tuple"),
    "date-value": ("config:\n  gpu-stack:production: 2024-01-01\n", "production", "valid boolean"),
    "int-key": ("config:\n  1: true\n", "1", "unknown key"),
    "top-level-typo": ("confg:\n  gpu-stack:production: false\n", "(file)", "unknown top-level key 'confg'; a stack file has config"),
    "binary": ("config:\n  gpu-stack:production: !!binary aGVsbG8=\n", "production", "valid boolean"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_is_refused_naming_the_file(tmp_path, capsys, name):
    text, key, why = MALFORMED[name]
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc, err = _plan(tmp_path, capsys)
    assert rc == 1, err
    lines = err.splitlines()
    assert lines and all(line.startswith("gpu-stack:") for line in lines), err
    assert any(line.startswith(f"gpu-stack:{key}: ") and why in line for line in lines), err
    if key == "(file)":
        assert "Pulumi.bad.yaml" in err


def test_a_missing_stack_file_lists_the_stacks(tmp_path, capsys):
    _write_stack(tmp_path, {"config": {}}, "other")
    rc, err = _plan(tmp_path, capsys, "nope")
    assert rc == 1 and err.startswith("gpu-stack:(file): no stack file Pulumi.nope.yaml; stacks here: other")


@pytest.mark.parametrize("row", [r for r in ROWS if not r.expected.startswith(r.path)], ids=lambda r: r.id)
def test_an_error_at_another_key_names_the_mutated_one_too(row):
    """Reported at a related key (physAddrBits at vms[0].memoryGib): the message names both."""
    messages = [i.message for i in issues_of(mutated(row)) if i.path == row.expected]
    assert any(row.path in m for m in messages), f"{row.path} not named in {messages}"
