"""`gpu-stack doctor` end to end: a real SSH server and a recorded Kubernetes API on 127.0.0.1.

The guest answers with the real 8xH100 kvm-guest captures (nvidia-smi -L,
topo -m, nvlink --status, systemctl status nvidia-fabricmanager; fixtures/,
PROVENANCE.md there). Where no 8-GPU capture exists the answer is derived in
`healthy_guest()` from a real one and says how (`nvidia-smi -q`: the real
1xH100 VM block once per GPU with the guest's real bus IDs and UUIDs). Short
outputs with no capture (/proc/modules, nvidia-ctk --version, the containerd
config, the kubelet checkpoint, dmesg lines) are written here in the format of
the tool that prints them. The hypervisor answers `virsh dumpxml` with the
planned domain of tests/fixtures/doctor/Pulumi.h100.yaml (what `make plan`
writes), as libvirt shows a running domain (with an id).
"""

from __future__ import annotations

import copy
import json
import re
import tarfile
from pathlib import Path

import asyncssh
import pytest

from doctor.diagnosis import FAIL, GUEST_COMMANDS, NODE_ANNOTATIONS, PASS, WARN, is_read_only, package_command
from tests.support.doctor_servers import KubeApi, SshServer
from doctor import command as doctor
from tests.support.plan import write_plan
from tools import mockrun, plan

HERE = Path(__file__).parent
ROOT_DIR = HERE.parent
NVSMI = HERE / "fixtures" / "nvidia-smi"
DOCTOR = HERE / "fixtures" / "doctor"
VM = "gpu-h100"
TOKEN = "doctor-test-token-5f2b8c1d9e"
JOIN_TOKEN = "abcdef.0123456789abcdef"
RELEASE = "kube-prometheus-stack"

H100_UUIDS = re.findall(r"GPU-[0-9a-f-]{36}", (NVSMI / "nvidia-smi-L.8xH100-SXM.kvm-guest.txt").read_text())
GUEST_GPU_BUS = [line.split()[0] for line in (DOCTOR / "lspci-Dnn.8xH100-SXM-4xNVSwitch.kvm-guest.txt").read_text().splitlines() if "3D controller" in line]
HOST_ADDRESSES = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0", "0000:9a:00.0", "0000:ab:00.0",
                  "0000:ba:00.0", "0000:db:00.0", "0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"]
NVSWITCH_ADDRESSES = HOST_ADDRESSES[8:]


def guest_bus(i: int) -> str:
    """GPU i's guest address as nvidia-smi prints it: 0000:0d:00.0 (lspci -D) -> 00000000:0D:00.0."""
    return "0000" + GUEST_GPU_BUS[i].upper().replace("0000:", ":", 1)


def derived_query(n: int, fabric_state: str = "Completed", fabric_status: str = "Success") -> str:
    """`nvidia-smi -q` for n H100s: the real 1xH100 VM capture's GPU block per GPU, with the real guest bus IDs and UUIDs."""
    text = (NVSMI / "nvidia-smi-q.1xH100-SXM-80GB-VM.590.48.01.txt").read_text()
    head, block = text.split("GPU 00000000:00:09.0\n", 1)
    head = head.replace("Attached GPUs                                          : 1", f"Attached GPUs                                          : {n}")
    blocks = []
    for i in range(n):
        bus = guest_bus(i)
        b = block.replace("GPU-00000000-0000-0000-0000-000000000000", H100_UUIDS[i]).replace("00000000:00:09.0", bus)
        b = b.replace("        State                                          : Completed", f"        State                                          : {fabric_state}")
        b = b.replace("        Status                                         : Success", f"        Status                                         : {fabric_status}")
        blocks.append(f"GPU {bus}\n{b.rstrip()}\n\n")
    return head + "".join(blocks)


CONTAINERD_WITH_NVIDIA = """version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
  BinaryName = "/usr/bin/nvidia-container-runtime"
"""
CONTAINERD_WITHOUT_NVIDIA = CONTAINERD_WITH_NVIDIA.split('\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]')[0] + "\n"

MODULES = ("nvidia_uvm 4956160 0 - Live 0x0000000000000000 (POE)\n"
           "nvidia_drm 135168 0 - Live 0x0000000000000000 (POE)\n"
           "nvidia 11501568 2 nvidia_uvm, Live 0x0000000000000000 (POE)\n"
           "drm 622592 1 nvidia_drm, Live 0x0000000000000000\n")
DMESG = ("[    3.912345] nvidia: loading out-of-tree module taints kernel.\n"
         "[    4.101112] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  590.48.01  Tue Nov 18 00:00:00 UTC 2025\n")


# /proc/driver/nvidia/version of the open kernel module, in the format NVIDIA's and distributions' docs show it
# ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  555.42.06  Release Build  (abuild@host)  <date>")
def proc_version(version: str) -> str:
    return (f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  (dvs-builder@U22-I3-AM02-24-3)  "
            "Tue Nov 18 00:00:00 UTC 2025\nGCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")


# the packages the doctor asks dpkg-query about (tests/fixtures/doctor/Pulumi.h100.yaml: Ubuntu 22.04, driver 590.48.01 with
# 4 NVSwitches, toolkit 1.17.8, Kubernetes 1.32.4), as `dpkg-query -W -f='${Package} ${Version}\n'` prints installed ones
DRIFT_PKGS = ("nvidia-container-toolkit", "containerd", "containerd.io", "kubeadm", "kubelet", "nvidia-fabricmanager-590")
PACKAGES = {"nvidia-container-toolkit": "1.17.8-1", "containerd": "1.7.27-0ubuntu1~22.04.1", "kubeadm": "1.32.4-1.1",
            "kubelet": "1.32.4-1.1", "nvidia-fabricmanager-590": "590.48.01-0ubuntu0.22.04.1"}


def dpkg_answer(pkgs: dict[str, str]) -> tuple[int, str, str]:
    out = "".join(f"{n} {pkgs[n]}\n" for n in DRIFT_PKGS if n in pkgs)
    err = "".join(f"dpkg-query: no packages found matching {n}\n" for n in DRIFT_PKGS if n not in pkgs)
    return (1 if err else 0), out, err


def xid79_line(i: int) -> str:
    return f"[ 9321.{i:06d}] NVRM: Xid (PCI:{GUEST_GPU_BUS[i][:-2]}): 79, pid=2116, name=nv-fabricmanage, GPU has fallen off the bus.\n"


def healthy_guest() -> dict[str, tuple[int, str, str]]:
    g = GUEST_COMMANDS
    return {
        g["nvidia-smi-L"]: (0, (NVSMI / "nvidia-smi-L.8xH100-SXM.kvm-guest.txt").read_text(), ""),
        g["nvidia-smi-q"]: (0, derived_query(8), ""),
        g["nvidia-smi-topo"]: (0, (NVSMI / "nvidia-smi-topo-m.8xH100-NVSwitch.kvm-guest.txt").read_text(), ""),
        g["nvidia-smi-nvlink"]: (0, (NVSMI / "nvidia-smi-nvlink-status.8xH100.kvm-guest.AUTHOR-SNIPPED.txt").read_text(), ""),
        g["modules"]: (0, MODULES, ""),
        g["fabricmanager"]: (0, (HERE / "fixtures" / "systemd" / "systemctl-status-nvidia-fabricmanager.8xH100.kvm-guest.txt").read_text(), ""),
        g["dmesg"]: (0, DMESG, ""),
        g["nvidia-ctk"]: (0, "NVIDIA Container Toolkit CLI version 1.17.8\ncommit: f202b80a9b9d0db00d9b1d73c0128c8962c55f4d\n", ""),
        g["cdi"]: (0, "", 'time="2026-12-01T10:00:00Z" level=info msg="Found 0 CDI devices"\n'),
        g["containerd-config"]: (0, CONTAINERD_WITH_NVIDIA, ""),
        g["kubelet-checkpoint"]: (0, json.dumps({"Data": {"PodDeviceEntries": None, "RegisteredDevices": {"nvidia.com/gpu": H100_UUIDS}},
                                                 "Checksum": 1946322215}), ""),
        g["driver-loaded"]: (0, proc_version("590.48.01"), ""),
        g["driver-installed"]: (0, "590.48.01\n", ""),
        package_command("ubuntu", DRIFT_PKGS): dpkg_answer(PACKAGES),
    }


def healthy_host(domain_xml: str, groups: dict[str, int]) -> dict[str, tuple[int, str, str]]:
    """The hypervisor as the preflight left it: each device alone in the group the preflight read."""
    out = {f"virsh -c qemu:///system dumpxml {VM}": (0, domain_xml, "")}
    for addr in HOST_ADDRESSES:
        out[f"readlink /sys/bus/pci/devices/{addr}/driver"] = (0, "../../../bus/pci/drivers/vfio-pci\n", "")
        out[f"ls /sys/bus/pci/devices/{addr}/iommu_group/devices"] = (0, f"{addr}\n", "")
        out[f"readlink /sys/bus/pci/devices/{addr}/iommu_group"] = (0, f"../../../../kernel/iommu_groups/{groups[addr]}\n", "")
        cls = "0x068000" if addr in NVSWITCH_ADDRESSES else "0x030200"  # NVSwitch `Bridge [0680]`, H100 `3D controller [0302]`
        out[f"grep -H . /sys/bus/pci/devices/{addr}/iommu_group/devices/*/class"] = (0, f"/sys/bus/pci/devices/{addr}/iommu_group/devices/{addr}/class:{cls}\n", "")
    return out


def meta(name: str, namespace: str | None = None, **extra) -> dict:
    m = {"name": name, "uid": f"uid-{name}", "resourceVersion": "1", "creationTimestamp": "2026-12-01T09:00:00Z", **extra}
    if namespace:
        m["namespace"] = namespace
    return m


def plugin_daemonset(tolerations: bool = True) -> dict:
    spec = {"containers": [{"name": "nvidia-device-plugin-ctr", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"}],
            "runtimeClassName": "nvidia", "priorityClassName": "system-node-critical"}
    if tolerations:
        spec["tolerations"] = [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                               {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": meta("nvidia-device-plugin", "nvidia-device-plugin", labels={"app.kubernetes.io/name": "nvidia-device-plugin"}),
            "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "nvidia-device-plugin"}},
                     "template": {"metadata": {"labels": {"app.kubernetes.io/name": "nvidia-device-plugin"}}, "spec": spec}},
            "status": {"currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberReady": 1, "numberMisscheduled": 0}}


def pod(name: str, namespace: str, node: str | None, phase: str, gpus: int = 0, ready: bool = True, waiting: str | None = None,
        runtime_class: str | None = "nvidia") -> dict:
    container = {"name": "main", "image": "nvcr.io/nvidia/cuda:12.8.0-base-ubuntu22.04"}
    spec: dict = {"containers": [container]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}}
        if runtime_class:
            spec["runtimeClassName"] = runtime_class
    if node:
        spec["nodeName"] = node
    status: dict = {"phase": phase}
    if phase != "Pending" or waiting:
        state = {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": "2026-12-01T09:01:00Z"}}
        status["containerStatuses"] = [{"name": "main", "ready": ready and not waiting, "restartCount": 0, "state": state, "image": container["image"], "imageID": ""}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta(name, namespace), "spec": spec, "status": status}


def event(pod_name: str, namespace: str, reason: str, message: str, type_: str = "Warning") -> dict:
    return {"apiVersion": "v1", "kind": "Event", "metadata": meta(f"{pod_name}.18c2", namespace),
            "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": namespace, "apiVersion": "v1"},
            "reason": reason, "message": message, "type": type_, "count": 3,
            "firstTimestamp": "2026-12-01T09:02:00Z", "lastTimestamp": "2026-12-01T09:05:00Z", "source": {"component": "kubelet"}}


def healthy_cluster() -> dict:
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": meta(VM, labels={"kubernetes.io/hostname": VM, "kubernetes.io/os": "linux", "nvidia.com/gpu.present": "true"},
                             annotations={NODE_ANNOTATIONS["driver"]: "590.48.01", NODE_ANNOTATIONS["fabricmanager"]: "590.48.01",
                                          NODE_ANNOTATIONS["toolkit"]: "1.17.8", NODE_ANNOTATIONS["kubernetes"]: "1.32.4"}),
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]},
            "status": {"nodeInfo": {"kubeletVersion": "v1.32.4", "containerRuntimeVersion": "containerd://1.7.27",
                                    "kernelVersion": "5.15.0-160-generic", "osImage": "Ubuntu 22.04.5 LTS"},
                       "capacity": {"cpu": "64", "memory": "263921512Ki", "pods": "110", "nvidia.com/gpu": "8"},
                       "allocatable": {"cpu": "64", "memory": "263819112Ki", "pods": "110", "nvidia.com/gpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}}
    plugin_pod = pod("nvidia-device-plugin-x7k2p", "nvidia-device-plugin", VM, "Running")
    plugin_pod["spec"]["containers"] = [{"name": "nvidia-device-plugin-ctr", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"},
                                        {"name": "config-manager", "image": "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"}]
    exporter_pod = pod("dcgm-exporter-9qv4d", "gpu-monitoring", VM, "Running")
    return {
        "node": node,
        "pods": [plugin_pod, exporter_pod, pod("train-0", "ml", VM, "Running", gpus=8)],
        "daemonsets": [plugin_daemonset()],
        "events": [],
        "runtimeclasses": [{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": meta("nvidia"), "handler": "nvidia"}],
        "servicemonitors": [{"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                             "metadata": meta("dcgm-exporter", "gpu-monitoring", labels={"release": RELEASE}),
                             "spec": {"endpoints": [{"port": "metrics"}], "selector": {"matchLabels": {"app": "dcgm-exporter"}}}}],
        "prometheusrules": [{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
                             "metadata": meta("gpu-stack-gpu-alerts", "monitoring", labels={"release": RELEASE}), "spec": {"groups": []}}],
        "targets": {"status": "success", "data": {"activeTargets": [
            {"labels": {"job": "dcgm-exporter", "node": VM, "instance": "10.244.1.5:9400", "namespace": "gpu-monitoring"},
             "scrapePool": "serviceMonitor/gpu-monitoring/dcgm-exporter/0", "scrapeUrl": "http://10.244.1.5:9400/metrics",
             "health": "up", "lastError": "", "lastScrape": "2026-12-01T10:00:00Z"}], "droppedTargets": []}},
        "rules": {"status": "success", "data": {"groups": [{"name": n, "file": "/etc/prometheus/rules/x.yaml", "rules": [], "interval": 30}
                                                         for n in ("gpu-stack.gpu-health", "gpu-stack.gpu-inventory", "gpu-stack.dcgm-exporter")]}},
        "alerts": {"status": "success", "data": {"alerts": [{"labels": {"alertname": "Watchdog", "severity": "none"}, "state": "firing",
                                                             "activeAt": "2026-12-01T09:00:00Z", "value": "1e+00"}]}},
        "logs": {"nvidia-device-plugin-x7k2p": (
            "I1201 09:01:02.000000       1 main.go:356] Starting Plugins.\n"
            "I1201 09:01:02.100000       1 server.go:195] Starting GRPC server for 'nvidia.com/gpu'\n"
            "I1201 09:01:02.200000       1 server.go:139] Starting to serve 'nvidia.com/gpu' on /var/lib/kubelet/device-plugins/nvidia-gpu.sock\n"
            "I1201 09:01:02.300000       1 server.go:146] Registered device plugin for 'nvidia.com/gpu' with Kubelet\n")},
        "podlogs": {"ml/train-0": "[rank0] world size 8, NCCL 2.27.3, 8 x NVIDIA H100 80GB HBM3\nstep 100 loss 2.314\n"},
    }


def routes(c: dict) -> dict:
    items = lambda kind, xs: {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": xs}  # noqa: E731
    r = {
        f"/api/v1/nodes/{VM}": c["node"],
        "/api/v1/pods": items("PodList", c["pods"]),
        "/apis/apps/v1/daemonsets": items("DaemonSetList", c["daemonsets"]),
        "/api/v1/events": items("EventList", c["events"]),
        "/apis/node.k8s.io/v1/runtimeclasses": items("RuntimeClassList", c["runtimeclasses"]),
        "/apis/monitoring.coreos.com/v1/servicemonitors": items("ServiceMonitorList", c["servicemonitors"]),
        "/apis/monitoring.coreos.com/v1/prometheusrules": items("PrometheusRuleList", c["prometheusrules"]),
    }
    proxy = f"/api/v1/namespaces/monitoring/services/{RELEASE}-prometheus:http-web/proxy/api/v1"
    for what in ("targets", "rules", "alerts"):
        r[f"{proxy}/{what}"] = c[what]
    for name, log in c["logs"].items():
        r[f"/api/v1/namespaces/nvidia-device-plugin/pods/{name}/log"] = log
    for key, log in c.get("podlogs", {}).items():
        namespace, name = key.split("/")
        r[f"/api/v1/namespaces/{namespace}/pods/{name}/log"] = log
    return r


FIXTURE_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILuboOTsYC4LhH1WQEw1vVO3UXJh/+bayMS4bvNu6e2a"


@pytest.fixture(scope="module")
def keys():
    return asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture(scope="module")
def ssh(keys):
    client, host = keys
    server = SshServer(client.export_public_key().decode(), host)
    yield server
    server.close()


@pytest.fixture(scope="module")
def kube():
    api = KubeApi()
    yield api
    api.close()


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory, keys):
    d = tmp_path_factory.mktemp("doctor-stack")
    text = (DOCTOR / "Pulumi.h100.yaml").read_text().replace(FIXTURE_HOST_KEY, keys[1].export_public_key().decode().strip())
    (d / "Pulumi.h100.yaml").write_text(text)
    return d


@pytest.fixture(scope="module")
def planned_domain(stack_dir, tmp_path_factory):
    out, _ = write_plan("h100", tmp_path_factory.mktemp("plan"), stack_dir)
    xml = (out / "vms" / VM / "domain.xml").read_text()
    return xml.replace('<domain type="kvm">', '<domain type="kvm" id="3">', 1)


@pytest.fixture(scope="module")
def stack_outputs(stack_dir):
    """The program's own outputs for the doctor's stack (mock monitor): vms.<vm>.iommuGroups as the preflight exports them."""
    values, secret_keys = plan.plan_config(plan.load_stack_file("h100", stack_dir), "h100")
    return mockrun.run(values, secret_keys, stack="h100", preview=True).outputs


@pytest.fixture
def run_doctor(ssh, kube, keys, stack_dir, planned_domain, stack_outputs, tmp_path):
    client, host = keys
    key_file = tmp_path / "id_ed25519"
    key_file.write_bytes(client.export_private_key())
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kube.kubeconfig(TOKEN))
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({
        "vms": {VM: {"ip": "127.0.0.1", "mac": "52:54:00:a9:a2:12", "domainId": "uuid", "hostPublicKey": host.export_public_key().decode(),
                     "iommuGroups": stack_outputs["vms"][VM]["iommuGroups"]}},
        "gpuInventory": {VM: {"driverVersion": "590.48.01", "cudaVersion": "13.1",
                              "gpus": [{"index": i, "name": "NVIDIA H100 80GB HBM3", "uuid": u, "busId": guest_bus(i), "memoryMib": 81559}
                                       for i, u in enumerate(H100_UUIDS)]}},
        "expectedAllocatable": {VM: {"nvidia.com/gpu": 8}},
    }))

    def run(guest: dict, cluster: dict, capsys, *extra: str, host: dict | None = None) -> tuple[int, dict]:
        ssh.responses = {"ubuntu": guest, "root": host or healthy_host(planned_domain, stack_outputs["vms"][VM]["iommuGroups"])}
        ssh.received.clear()
        kube.routes = routes(cluster)
        kube.requests.clear()
        kube.authorization.clear()
        kube.queries.clear()
        code = doctor.main(["h100", "--stack-dir", str(stack_dir), "--outputs", str(outputs), "--ssh-key", str(key_file),
                            "--ssh-port", str(ssh.port), "--host-ssh-key", str(key_file), "--host-ssh-port", str(ssh.port),
                            "--kubeconfig", str(kubeconfig), "--json", *extra])
        report = json.loads(capsys.readouterr().out)
        assert report["exitCode"] == code
        # read-only: every command sent is in the allowlist, every API call a GET
        assert ssh.received and all(is_read_only(cmd) for _, cmd in ssh.received), ssh.received
        assert {u for u, _ in ssh.received} == {"ubuntu", "root"}
        assert kube.requests and {m for m, _ in kube.requests} == {"GET"}
        assert kube.authorization == {f"Bearer {TOKEN}"}  # every call, the service proxy included, authenticated
        assert all(q == ("container=nvidia-device-plugin-ctr&tailLines=200" if "/nvidia-device-plugin/" in p else "container=main&tailLines=50")
                   for p, q in kube.queries if p.endswith("/log")), kube.queries
        return code, {(r["section"], r["check"]): r for r in report["vms"][0]["results"]}

    return run


def statuses(results: dict, status: str) -> set[str]:
    return {check for (_, check), r in results.items() if r["status"] == status}


def test_a_device_regrouped_since_the_preflight_fails(run_doctor, planned_domain, stack_outputs, capsys):
    """The group moved and now holds a device this VM was not given: the preflight's verdict is stale."""
    seen = stack_outputs["vms"][VM]["iommuGroups"]
    host = healthy_host(planned_domain, dict(seen, **{"0000:9a:00.0": 300}))
    host["ls /sys/bus/pci/devices/0000:9a:00.0/iommu_group/devices"] = (0, "0000:99:00.0\n0000:9a:00.0\n", "")
    code, results = run_doctor(healthy_guest(), healthy_cluster(), capsys, host=host)
    r = results[("hypervisor", "IOMMU groups as at preflight")]
    assert code == 1 and r["status"] == FAIL and results[("hypervisor", "IOMMU groups")]["status"] == WARN
    assert r["evidence"].startswith(f"0000:9a:00.0 is in group 300, the preflight saw {seen['0000:9a:00.0']}; and a group now holds")
    assert "pulumi preview" in r["fix"] and "seed 002" in r["fix"]


def test_a_device_only_renumbered_is_a_warning(run_doctor, planned_domain, stack_outputs, capsys):
    """Group numbers follow discovery order: an NVMe drive added before the GPUs renumbers every later group."""
    seen = stack_outputs["vms"][VM]["iommuGroups"]
    host = healthy_host(planned_domain, {a: g + 1 for a, g in seen.items()})
    code, results = run_doctor(healthy_guest(), healthy_cluster(), capsys, host=host)
    r = results[("hypervisor", "IOMMU groups as at preflight")]
    assert code == 0 and r["status"] == WARN and "renumbered, not regrouped" in r["fix"]
    assert "each group still holds only this VM's devices" in r["evidence"]


def test_healthy_8xh100_nvswitch(run_doctor, capsys):
    code, results = run_doctor(healthy_guest(), healthy_cluster(), capsys)
    assert statuses(results, FAIL) == set() and code == 0
    assert [s for s, _ in results][0] == "hypervisor" and [s for s, _ in results][-1] == "drift"
    assert {c for (s, c), r in results.items() if s == "drift" and r["status"] == PASS} == {
        "driver", "Fabric Manager", "nvidia-container-toolkit", "containerd", "kubeadm and kubelet", "GPUs by UUID and PCI address",
        "recorded plan (node annotations)"}
    assert results[("guest driver", "GPU count and UUIDs")]["evidence"] == "8 of 8 GPUs listed (matched by UUID)"
    assert results[("guest driver", "fabric state")]["evidence"] == "Completed/Success on 8 GPUs"
    assert results[("guest driver", "Fabric Manager active")]["status"] == PASS
    assert "NV18" in results[("guest driver", "NVLink")]["evidence"]
    assert results[("hypervisor", "domain hole64 and maxphysaddr")]["evidence"] == "hole64 2048G, maxphysaddr passthrough, 12 hostdevs"
    assert results[("hypervisor", "IOMMU groups")]["evidence"].endswith("0000:18:00.0: 24, 0000:2a:00.0: 42, 0000:3a:00.0: 58, "
                                                                      "0000:5d:00.0: 93, 0000:9a:00.0: 154, 0000:ab:00.0: 171, 0000:ba:00.0: 186, "
                                                                      "0000:db:00.0: 219, 0000:05:00.0: 5, 0000:06:00.0: 6, 0000:07:00.0: 7, 0000:08:00.0: 8")
    assert results[("hypervisor", "IOMMU groups as at preflight")]["status"] == PASS
    assert results[("kubernetes", "capacity and allocatable")]["status"] == PASS
    assert results[("kubernetes", "plugin log")]["evidence"] == "Registered device plugin for 'nvidia.com/gpu' with Kubelet"
    assert results[("monitoring", "firing alerts")]["evidence"] == "none firing"


def test_fabric_manager_inactive(run_doctor, capsys):
    guest = healthy_guest()
    guest[GUEST_COMMANDS["fabricmanager"]] = (3, "○ nvidia-fabricmanager.service - NVIDIA fabric manager service\n"
                                                 "     Loaded: loaded (/usr/lib/systemd/system/nvidia-fabricmanager.service; disabled; preset: disabled)\n"
                                                 "     Active: inactive (dead)\n", "")
    guest[GUEST_COMMANDS["nvidia-smi-q"]] = (0, derived_query(8, "In Progress", "N/A"), "")
    code, results = run_doctor(guest, healthy_cluster(), capsys)
    assert code == 1
    fm = results[("guest driver", "Fabric Manager active")]
    assert fm["status"] == FAIL and "inactive (dead)" in fm["evidence"]
    assert "systemctl enable --now nvidia-fabricmanager" in fm["fix"] and "802" in fm["fix"]
    fabric = results[("guest driver", "fabric state")]
    assert fabric["status"] == FAIL and fabric["evidence"].count("In Progress/N/A") == 8


def test_seven_of_eight_gpus_fell_off_the_bus(run_doctor, capsys):
    guest = healthy_guest()
    listing = (NVSMI / "nvidia-smi-L.8xH100-SXM.kvm-guest.txt").read_text().splitlines()[0] + "\n"
    lost = "".join(f"Unable to determine the device handle for GPU{i}: {GUEST_GPU_BUS[i]}: Unknown Error\n" for i in range(1, 8))
    guest[GUEST_COMMANDS["nvidia-smi-L"]] = (255, listing + lost, "")
    guest[GUEST_COMMANDS["nvidia-smi-q"]] = (0, derived_query(1), "")
    guest[GUEST_COMMANDS["dmesg"]] = (0, DMESG + "".join(xid79_line(i) for i in range(1, 8)), "")
    cluster = healthy_cluster()
    cluster["node"]["status"]["allocatable"]["nvidia.com/gpu"] = "1"
    cluster["node"]["status"]["capacity"]["nvidia.com/gpu"] = "1"
    code, results = run_doctor(guest, cluster, capsys)
    assert code == 1
    count = results[("guest driver", "GPU count and UUIDs")]
    assert count["status"] == FAIL and count["evidence"].startswith("1 of 8 GPUs listed; missing by UUID: " + H100_UUIDS[1])
    assert "Unable to determine the device handle" in count["evidence"]
    xid = results[("guest driver", "Xid 79")]
    assert xid["status"] == FAIL and xid["evidence"].startswith("7 events on 7 GPUs")
    assert "fallen off the bus" in xid["fix"]
    assert results[("kubernetes", "capacity and allocatable")]["status"] == FAIL


def test_plugin_daemonset_without_toleration(run_doctor, capsys):
    cluster = healthy_cluster()
    cluster["daemonsets"] = [plugin_daemonset(tolerations=False)]
    cluster["daemonsets"][0]["status"].update(currentNumberScheduled=0, desiredNumberScheduled=0, numberReady=0)
    cluster["pods"] = [p for p in cluster["pods"] if "device-plugin" not in p["metadata"]["name"] and "train" not in p["metadata"]["name"]]
    cluster["logs"] = {}
    for k in ("capacity", "allocatable"):
        del cluster["node"]["status"][k]["nvidia.com/gpu"]
    code, results = run_doctor(healthy_guest(), cluster, capsys)
    assert code == 1
    plugin = results[("kubernetes", "device plugin on the node")]
    assert plugin["status"] == FAIL
    assert "DaemonSet nvidia-device-plugin does not tolerate taint nvidia.com/gpu=true:NoSchedule" in plugin["evidence"]
    assert "add the toleration" in plugin["fix"]
    alloc = results[("kubernetes", "capacity and allocatable")]
    assert alloc["status"] == FAIL and "capacity 0, allocatable 0, expected 8" in alloc["evidence"]
    assert "device plugin is not running" in alloc["fix"]


def test_allocatable_zero_because_runtime_has_no_nvidia_handler(run_doctor, capsys):
    guest = healthy_guest()
    guest[GUEST_COMMANDS["containerd-config"]] = (0, CONTAINERD_WITHOUT_NVIDIA, "")
    cluster = healthy_cluster()
    name = "nvidia-device-plugin-x7k2p"
    cluster["pods"][0] = pod(name, "nvidia-device-plugin", VM, "Pending", waiting="ContainerCreating")
    cluster["events"] = [event(name, "nvidia-device-plugin", "FailedCreatePodSandBox",
                               'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for "nvidia" is configured')]
    cluster["logs"] = {}
    cluster["node"]["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    cluster["node"]["status"]["capacity"]["nvidia.com/gpu"] = "0"
    code, results = run_doctor(guest, cluster, capsys)
    assert code == 1
    rt = results[("runtime", "containerd nvidia runtime")]
    assert rt["status"] == FAIL and rt["evidence"] == "runtimes: runc" and "nvidia-ctk runtime configure --runtime=containerd" in rt["fix"]
    plugin = results[("kubernetes", "device plugin on the node")]
    assert 'no runtime for "nvidia" is configured' in plugin["evidence"] and "runtime section" in plugin["fix"]
    alloc = results[("kubernetes", "capacity and allocatable")]
    assert alloc["status"] == FAIL and "containerd has no `nvidia` runtime" in alloc["fix"]


def test_service_monitor_without_release_label(run_doctor, capsys):
    cluster = healthy_cluster()
    cluster["servicemonitors"][0]["metadata"]["labels"] = {"app": "dcgm-exporter"}
    cluster["targets"]["data"]["activeTargets"] = []
    code, results = run_doctor(healthy_guest(), cluster, capsys)
    assert code == 1
    sm = results[("monitoring", "ServiceMonitor selected")]
    assert sm["status"] == FAIL and "gpu-monitoring/dcgm-exporter release=None" in sm["evidence"]
    assert f"release={RELEASE}" in sm["fix"]
    assert results[("monitoring", "dcgm-exporter target up")]["status"] == FAIL
    assert statuses(results, FAIL) == {"ServiceMonitor selected", "dcgm-exporter target up"}


def test_running_pod_without_the_runtime_class_sees_no_gpu(run_doctor, capsys):
    """Seed 003 §2.1 "Running but no GPU": on the containerd path runc ignores NVIDIA_VISIBLE_DEVICES."""
    cluster = healthy_cluster()
    cluster["pods"].append(pod("infer-0", "ml", VM, "Running", gpus=1, runtime_class=None))
    cluster["podlogs"]["ml/infer-0"] = "RuntimeError: Found no NVIDIA driver on your system.\n"
    code, results = run_doctor(healthy_guest(), cluster, capsys)
    r = results[("workloads", "pod ml/infer-0")]
    assert code == 1 and statuses(results, FAIL) == {"pod ml/infer-0"}
    assert r["evidence"].startswith("Running but no GPU: running without the nvidia runtime: runtimeClassName unset")
    assert "runtimeClassName: nvidia" in r["fix"]


@pytest.mark.parametrize("line, cls, hint", [
    ("CUDA error: CUDA driver version is insufficient for CUDA runtime version", "CUDA version", "seed 003 §3.5"),
    ("RuntimeError: CUDA error: system not yet initialized", "fabric not ready", "Fabric Manager"),
    ("Failed to initialize NVML: Unknown Error", "NVML lost the devices", "nvidia-container-toolkit#48"),
])
def test_running_pod_whose_log_says_it_has_no_gpu(run_doctor, capsys, line, cls, hint):
    """A log line may be history the pod recovered from: a warning, with the fix."""
    cluster = healthy_cluster()
    cluster["podlogs"]["ml/train-0"] += f"Traceback (most recent call last):\n{line}\n"
    code, results = run_doctor(healthy_guest(), cluster, capsys)
    r = results[("workloads", "pod ml/train-0")]
    assert code == 0 and r["status"] == WARN
    assert r["evidence"] == f"Running but no GPU: {cls}: {line}" and hint in r["fix"]


def test_lines_that_only_look_like_gpu_errors_are_not_classified():
    from doctor.diagnosis import no_gpu_signature
    for line in ("postgres: database system not yet initialized", "GET /api returned error 8021", "which: nvidia-smi: not found",
                 "retrying: HTTP error 802 from upstream"):
        assert no_gpu_signature(line) is None, line
    assert no_gpu_signature("cudaGetDeviceCount returned 802\n")[0] == "fabric not ready"
    assert no_gpu_signature("CUDA error: no CUDA-capable device is detected\x1b[31m\n")[1] == "CUDA error: no CUDA-capable device is detected?[31m"


def test_a_runtime_class_named_otherwise_with_the_nvidia_handler_is_fine(run_doctor, capsys):
    cluster = healthy_cluster()
    cluster["runtimeclasses"].append({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": meta("gpu"), "handler": "nvidia"})
    cluster["pods"].append(pod("infer-1", "ml", VM, "Running", gpus=1, runtime_class="gpu"))
    code, results = run_doctor(healthy_guest(), cluster, capsys)
    assert code == 0 and ("workloads", "pod ml/infer-1") not in results


def test_pending_pod_with_insufficient_gpus(run_doctor, capsys):
    cluster = healthy_cluster()
    cluster["pods"].append(pod("train-1", "ml", None, "Pending", gpus=4))
    cluster["events"] = [event("train-1", "ml", "FailedScheduling",
                               "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available: "
                               "1 No preemption victims found for incoming pod.")]
    code, results = run_doctor(healthy_guest(), cluster, capsys)
    assert code == 1
    r = results[("workloads", "pod ml/train-1")]
    assert r["status"] == FAIL and "insufficient GPU: all allocated" in r["evidence"]
    assert "are allocated" in r["fix"] and "kubectl describe quota" in r["fix"]
    assert statuses(results, FAIL) == {"pod ml/train-1"}


def test_evidence_tarball_is_redacted(run_doctor, capsys, keys, tmp_path):
    client, _ = keys
    cluster = healthy_cluster()
    pem = client.export_private_key().decode()
    cluster["logs"]["nvidia-device-plugin-x7k2p"] += f"E1201 debug dump token={TOKEN} join {JOIN_TOKEN}\n{pem}"
    code, _ = run_doctor(healthy_guest(), cluster, capsys, "--evidence", str(tmp_path / "ev"))
    assert code == 0
    with tarfile.open(tmp_path / "ev" / "gpu-stack-doctor-h100-gpu-h100.tar.gz") as tar:
        members = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    names = {n.split("/", 1)[1] for n in members}
    assert {"guest/nvidia-smi-q.txt", "guest/dmesg-xid.txt", "kubernetes/node-allocatable.json", "kubernetes/events.json",
            "kubernetes/plugin-logs/nvidia-device-plugin-x7k2p.log", "results.json"} <= names
    blob = "\n".join(members.values())
    assert TOKEN not in blob and JOIN_TOKEN not in blob and "PRIVATE KEY-----\n" not in blob
    assert pem.splitlines()[1] not in blob
    assert "[redacted private key]" in blob
    assert "Registered device plugin for 'nvidia.com/gpu'" in blob  # the rest is kept
    assert json.loads(members["h100-gpu-h100/kubernetes/node-allocatable.json"])["allocated"] == {"ml/train-0": 8}


def test_table_output_without_colour_off_a_tty(run_doctor, capsys):
    cluster = healthy_cluster()
    cluster["servicemonitors"][0]["metadata"]["labels"] = {}
    _, results = run_doctor(healthy_guest(), cluster, capsys)
    rows = [doctor.Result(**r) for r in results.values()]
    table = doctor.render_table(VM, rows, colour=False)
    assert "\x1b[" not in table and "FAIL  ServiceMonitor selected" in table and "fix: label it `release: kube-prometheus-stack`" in table
    assert "\x1b[31mFAIL\x1b[0m" in doctor.render_table(VM, rows, colour=True)


def test_a_command_outside_the_allowlist_is_never_sent(ssh):
    target = doctor.SshTarget("127.0.0.1", ssh.port, "ubuntu", None, ())
    sent = []
    for cmd in ("systemctl restart nvidia-fabricmanager", "nvidia-smi -r", "readlink /sys/bus/pci/devices/0000:18:00.0/driver; reboot"):
        assert not is_read_only(cmd)
        with pytest.raises(doctor.NotReadOnly):
            doctor.run_sync(doctor.run_commands(target, {"x": cmd}, sent))
    assert sent == []


def test_allowlist_holds_only_reading_commands():
    verbs = {c.split()[0] if c.split()[0] != "sudo" else c.split()[2] for c in GUEST_COMMANDS.values()}
    assert verbs == {"nvidia-smi", "cat", "systemctl", "dmesg", "nvidia-ctk", "containerd", "modinfo"}
    for family in ("ubuntu", "rhel"):
        c = package_command(family, DRIFT_PKGS)
        assert is_read_only(c) and not is_read_only(c + "; reboot") and not is_read_only(c.replace("kubeadm", "$(reboot)"))
        assert c.split()[:2] in (["dpkg-query", "-W"], ["rpm", "-q"])
    for c in GUEST_COMMANDS.values():
        assert not re.search(r"\b(restart|start|stop|enable|disable|rm|reset|configure|generate|-r|--gpu-reset|-pm)\b", c.replace("systemctl status", "")), c
    assert is_read_only("virsh -c qemu:///system dumpxml gpu-h100") and not is_read_only("virsh -c qemu:///system destroy gpu-h100")


def test_expected_state_from_stack_config(stack_dir):
    cfg = doctor.load_config("h100", stack_dir)
    x = doctor.expected_for(cfg, VM, {})
    assert (x.gpu_count, x.nvswitch, x.driver_version, x.toolkit_version, x.runtime_handler) == (8, True, "590.48.01", "1.17.8", "nvidia")
    assert x.host_addresses == tuple(HOST_ADDRESSES) and x.hole64_gib == 2048 and x.allocatable == 8
    assert x.node_taints == (("nvidia.com/gpu", "true", "NoSchedule"),) and x.plugin == "helm" and x.release == RELEASE
    assert copy.deepcopy(x) == x
    assert x.iommu_groups is None  # outputs without vms.<vm>.iommuGroups


def test_groups_not_recorded_is_a_warning_not_a_pass(stack_dir, planned_domain, stack_outputs):
    from doctor.diagnosis import WARN, CommandResult, Evidence, check_hypervisor, host_commands
    cfg = doctor.load_config("h100", stack_dir)
    host = healthy_host(planned_domain, stack_outputs["vms"][VM]["iommuGroups"])
    older = doctor.expected_for(cfg, VM, {"vms": {VM: {"ip": "127.0.0.1"}}})
    ev = Evidence(host={k: CommandResult(c, *host[c]) for k, c in host_commands(VM, older.host_addresses).items()})
    r = next(r for r in check_hypervisor(older, ev) if r.check == "IOMMU groups as at preflight")
    assert r.status == WARN and "iommuGroups" in r.evidence and "pulumi up" in r.fix
    recorded = doctor.expected_for(cfg, VM, {"vms": stack_outputs["vms"]})
    assert next(r for r in check_hypervisor(recorded, ev) if r.check == "IOMMU groups as at preflight").status == PASS


def test_guest_with_a_different_host_key_is_refused(ssh, kube, keys, stack_dir, planned_domain, tmp_path, capsys):
    """The guest's host key is pinned from vms.<vm>.hostPublicKey: a server with another key gets no command."""
    client, host = keys
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id"
    key_file.write_bytes(client.export_private_key())
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"vms": {VM: {"ip": "127.0.0.1", "hostPublicKey": impostor.export_public_key().decode()}},
                                   "expectedAllocatable": {VM: {"nvidia.com/gpu": 8}}}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kube.kubeconfig(TOKEN))
    ssh.responses = {"ubuntu": healthy_guest()}
    ssh.received.clear()
    kube.routes = routes(healthy_cluster())
    code = doctor.main(["h100", "--stack-dir", str(stack_dir), "--outputs", str(outputs), "--ssh-key", str(key_file),
                        "--ssh-port", str(ssh.port), "--no-host", "--kubeconfig", str(kubeconfig), "--json"])
    results = {r["check"]: r for r in json.loads(capsys.readouterr().out)["vms"][0]["results"]}
    assert code == 1 and ssh.received == []
    reach = results["guest reachable"]
    assert reach["status"] == FAIL and "Host key is not trusted" in reach["evidence"] and "hostPublicKey" in reach["fix"]
    assert results["hypervisor checks"]["status"] == "SKIP"
    assert results["capacity and allocatable"]["status"] == PASS  # the cluster half still ran


def test_expected_state_of_the_repositorys_stacks():
    prod = doctor.expected_for(doctor.load_config("prod", ROOT_DIR), "ubuntu-gpu", {})
    assert (prod.plugin, prod.plugin_namespace, prod.nvswitch, prod.gpu_count, prod.allocatable) == ("operator", "gpu-operator", True, 8, 8)
    assert prod.node_taints == () and prod.driver_version == "580.173.02" and prod.hole64_gib == 2048
    dev = doctor.expected_for(doctor.load_config("dev", ROOT_DIR), "gpu-dev-0", {})
    assert (dev.plugin, dev.plugin_namespace, dev.nvswitch, dev.allocatable) == ("helm", "nvidia-device-plugin", False, 4)  # time-slicing x4
    assert "nvidia-smi-topo" not in doctor.guest_commands(dev) and "fabricmanager" in doctor.guest_commands(prod)


def test_a_hanging_command_times_out_on_its_own(run_doctor, capsys, monkeypatch):
    monkeypatch.setattr(doctor, "COMMAND_TIMEOUT_S", 1)
    guest = healthy_guest()
    rc, out, err = guest[GUEST_COMMANDS["nvidia-smi-q"]]
    guest[GUEST_COMMANDS["nvidia-smi-q"]] = (rc, out, err, 5)  # nvidia-smi wedged on a lost GPU
    code, results = run_doctor(guest, healthy_cluster(), capsys)
    assert code == 1
    driver = results[("guest driver", "driver version")]
    assert driver["status"] == FAIL and "timed out after 1s" in driver["evidence"]
    assert results[("guest driver", "GPU count and UUIDs")]["status"] == PASS  # the other commands still answered


def _hypervisor_only(ssh, kube, keys, stack_dir, tmp_path, capsys, responses: dict, host_key: bool) -> dict:
    """The doctor on a VM whose guest is not reachable, the hypervisor at the test SSH server; its results by check.
    host_key: pass the client key as --host-ssh-key too (else the doctor picks the hypervisor key itself)."""
    client, _ = keys
    key_file = tmp_path / "id"
    key_file.write_bytes(client.export_private_key())
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"vms": {VM: {"ip": "127.0.0.1"}}, "expectedAllocatable": {VM: {"nvidia.com/gpu": 8}}}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kube.kubeconfig(TOKEN))
    ssh.responses = responses
    ssh.received.clear()
    kube.routes = routes(healthy_cluster())
    doctor.main(["h100", "--stack-dir", str(stack_dir), "--outputs", str(outputs), "--ssh-key", str(key_file),
                 *(["--host-ssh-key", str(key_file)] if host_key else []),
                 "--host-ssh-port", str(ssh.port), "--kubeconfig", str(kubeconfig), "--json"])
    return {r["check"]: r for r in json.loads(capsys.readouterr().out)["vms"][0]["results"]}


def test_hypervisor_with_another_key_than_the_pinned_host_key_is_refused(ssh, kube, keys, tmp_path, capsys):
    """The hypervisor is checked against hosts[].hostKey, as the libvirt provider checks it: another key gets no command."""
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    d = tmp_path / "stack"
    d.mkdir()
    (d / "Pulumi.h100.yaml").write_text((DOCTOR / "Pulumi.h100.yaml").read_text().replace(FIXTURE_HOST_KEY, impostor))
    results = _hypervisor_only(ssh, kube, keys, d, tmp_path, capsys, {}, host_key=True)
    assert ssh.received == []
    reach = results["hypervisor reachable"]
    assert reach["status"] == WARN and "Host key is not trusted" in reach["evidence"] and "hosts[].hostKey" in reach["fix"]


def test_hypervisor_key_defaults_to_the_one_the_provider_uses(ssh, kube, keys, stack_dir, tmp_path, capsys):
    """Without --host-ssh-key the doctor logs in to the hypervisor with the libvirt provider's key
    (gpu-stack:hypervisorSshPrivateKey, else the guests' key), never the user's agent by surprise."""
    _hypervisor_only(ssh, kube, keys, stack_dir, tmp_path, capsys, {"root": {}}, host_key=False)
    assert "root" in {u for u, _ in ssh.received}


# --- drift (issue 26 item 4): the node against what the stack deployed ------------------------------

def drift(results: dict) -> dict:
    return {c: r for (s, c), r in results.items() if s == "drift"}


def test_versions_changed_outside_gpu_stack_fail_with_their_fix(run_doctor, capsys):
    """An unattended upgrade and a hand fix: each component that differs from the plan is a FAIL naming both versions."""
    guest = healthy_guest()
    g = GUEST_COMMANDS
    guest[g["driver-loaded"]] = (0, proc_version("580.95.05"), "")
    guest[g["driver-installed"]] = (0, "580.95.05\n", "")
    guest[package_command("ubuntu", DRIFT_PKGS)] = dpkg_answer(dict(
        PACKAGES, **{"nvidia-container-toolkit": "1.18.0-1", "containerd": "1.7.28-0ubuntu1~22.04.1", "kubelet": "1.32.5-1.1",
                     "nvidia-fabricmanager-590": "590.44.01-0ubuntu0.22.04.1"}))
    code, results = run_doctor(guest, healthy_cluster(), capsys)
    d = drift(results)
    assert code == 1
    assert d["driver"]["status"] == FAIL and d["driver"]["evidence"] == "driver loaded 580.95.05, installed 580.95.05, plan 590.48.01"
    assert "outside gpu-stack" in d["driver"]["fix"] and "upgrade-check" in d["driver"]["fix"]
    assert d["Fabric Manager"]["status"] == FAIL and d["Fabric Manager"]["evidence"] == "nvidia-fabricmanager-590 590.44.01, plan 590.48.01"
    assert d["nvidia-container-toolkit"]["evidence"] == "nvidia-container-toolkit 1.18.0, plan 1.17.8"
    assert d["nvidia-container-toolkit"]["status"] == FAIL
    assert d["containerd"]["status"] == FAIL and d["containerd"]["evidence"] == "containerd installed 1.7.28, running 1.7.27"
    assert "restart containerd" in d["containerd"]["fix"]
    assert d["kubeadm and kubelet"]["status"] == FAIL
    assert d["kubeadm and kubelet"]["evidence"] == "kubeadm 1.32.4, kubelet 1.32.5 installed, v1.32.4 running, plan 1.32.4"


def test_planned_driver_installed_but_the_old_module_loaded_says_reboot(run_doctor, capsys):
    guest = healthy_guest()
    guest[GUEST_COMMANDS["driver-loaded"]] = (0, proc_version("580.95.05"), "")
    code, results = run_doctor(guest, healthy_cluster(), capsys)
    d = drift(results)["driver"]
    assert code == 1 and d["status"] == FAIL and d["evidence"] == "driver loaded 580.95.05, installed 590.48.01, plan 590.48.01"
    assert "reboot" in d["fix"] and "drain" in d["fix"]


def test_a_replaced_board_is_another_uuid_at_the_same_address(run_doctor, capsys):
    guest = healthy_guest()
    new = "GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
    guest[GUEST_COMMANDS["nvidia-smi-q"]] = (0, derived_query(8).replace(H100_UUIDS[3], new), "")
    code, results = run_doctor(guest, healthy_cluster(), capsys)
    r = drift(results)["GPUs by UUID and PCI address"]
    addr = GUEST_GPU_BUS[3]
    assert code == 1 and r["status"] == FAIL and r["evidence"] == f"replaced board: {addr} was {H100_UUIDS[3]}, is {new}"
    assert "guest-verify" in r["fix"] and "gpu-stack.io/gpu-uuids" in r["fix"]


def test_a_lost_gpu_is_a_deployed_address_with_no_gpu(run_doctor, capsys):
    guest = healthy_guest()
    guest[GUEST_COMMANDS["nvidia-smi-q"]] = (0, derived_query(7), "")
    code, results = run_doctor(guest, healthy_cluster(), capsys)
    r = drift(results)["GPUs by UUID and PCI address"]
    assert code == 1 and r["status"] == FAIL and r["evidence"] == f"{GUEST_GPU_BUS[7]} ({H100_UUIDS[7]}) is gone"
    assert "seed 003 step 2" in r["fix"]


def test_an_older_recorded_plan_on_the_node_is_a_warning(run_doctor, capsys):
    cluster = healthy_cluster()
    cluster["node"]["metadata"]["annotations"][NODE_ANNOTATIONS["toolkit"]] = "1.17.7"
    code, results = run_doctor(healthy_guest(), cluster, capsys)
    r = drift(results)["recorded plan (node annotations)"]
    assert code == 0 and r["status"] == WARN and r["evidence"] == "gpu-stack.io/expected-toolkit=1.17.7, plan 1.17.8"
