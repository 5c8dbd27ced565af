"""doctor/diagnosis.py on its own: the decision tree, tolerations, the hypervisor facts, redaction."""

from __future__ import annotations

import pytest

from convergence.analysis import tolerates
from doctor.diagnosis import (
    FAIL,
    PASS,
    WARN,
    CommandResult,
    Evidence,
    Expected,
    check_hypervisor,
    classify_pod,
    diagnose,
    exit_code,
    host_commands,
    is_read_only,
    redact,
)

NODE = {"status": {"allocatable": {"nvidia.com/gpu": "8"}}}


def tolerated(tolerations, taint) -> bool:
    """What the doctor asks of a DaemonSet's tolerations: does any tolerate the taint (convergence.tolerates, Kubernetes' rule)."""
    return any(tolerates(t, taint) for t in tolerations or [])


def ev(reason: str, message: str) -> list[dict]:
    return [{"type": "Warning", "reason": reason, "message": message}]


@pytest.mark.parametrize(("reason", "message", "node", "cls", "fix"), [
    ("FailedScheduling", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.", {"status": {"allocatable": {}}},
     "insufficient GPU: node has no capacity", "device plugin"),
    ("FailedScheduling", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.", NODE, "insufficient GPU: all allocated", "quota"),
    ("FailedScheduling", "0/2 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: true}.", NODE, "affinity or taint", "toleration"),
    ("FailedScheduling", "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.", NODE, "affinity or taint", "nodeSelector"),
    ("UnexpectedAdmissionError", "Allocate failed due to rpc error: code = Unknown desc = device GPU-x is unhealthy", NODE, "allocation error", "plugin log"),
    ("Failed", "Error: failed to create containerd task: OCI runtime create failed: nvidia-container-cli: mount error", NODE,
     "mount or runtime error", "runtimeClassName"),
])
def test_decision_tree(reason, message, node, cls, fix):
    pod = {"status": {"phase": "Pending"}}
    got_cls, evidence, got_fix = classify_pod(pod, ev(reason, message), node, "nvidia.com/gpu")
    assert got_cls == cls and message in evidence and fix in got_fix


def test_running_pod_without_events_points_at_nvidia_smi_in_the_container():
    cls, _, fix = classify_pod({"status": {"phase": "Running"}}, [], NODE, "nvidia.com/gpu")
    assert cls == "running but failing" and "kubectl exec <pod> -- nvidia-smi" in fix


def test_tolerations():
    taint = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
    assert tolerated([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert tolerated([{"operator": "Exists"}], taint)
    assert tolerated([{"key": "nvidia.com/gpu", "operator": "Equal", "value": "true"}], taint)
    assert not tolerated([{"key": "nvidia.com/gpu", "operator": "Equal", "value": "false"}], taint)
    assert not tolerated([{"key": "CriticalAddonsOnly", "operator": "Exists"}], taint)
    assert not tolerated([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}], taint)
    assert not tolerated(None, taint)


DOMAIN = """<domain type="kvm" id="{id}" xmlns:qemu="http://libvirt.org/schemas/domain/qemu/1.0">
  <name>vm</name>
  <cpu mode="host-passthrough"><maxphysaddr mode="passthrough"/></cpu>
  <devices>
    <hostdev mode="subsystem" type="pci" managed="yes"><source><address domain="0x0000" bus="0x18" slot="0x00" function="0x0"/></source></hostdev>
  </devices>
  <qemu:commandline><qemu:arg value="-global"/><qemu:arg value="q35-pcihost.pci-hole64-size={hole}G"/></qemu:commandline>
</domain>"""


def host_evidence(hole: int, id_: str = "1", driver: str = "vfio-pci", group: str = "0000:18:00.0 0000:18:00.1") -> Evidence:
    x = Expected(vm="vm", gpu_count=1, host_addresses=("0000:18:00.0",), hole64_gib=2048, iommu_groups={"0000:18:00.0": 27})
    e = Evidence(host={
        "iommu-group-id 0000:18:00.0": CommandResult("readlink", 0, "../../../../kernel/iommu_groups/27\n"),
        "dumpxml": CommandResult("virsh", 0, DOMAIN.format(hole=hole, id=id_)),
        "driver 0000:18:00.0": CommandResult("readlink", 0, f"../../../bus/pci/drivers/{driver}\n"),
        "iommu-group 0000:18:00.0": CommandResult("ls", 0, group + "\n"),
    })
    return x, e


def test_hypervisor_matches_the_plan():
    results = {r.check: r for r in check_hypervisor(*host_evidence(2048))}
    assert {r.status for r in results.values()} == {PASS}
    assert results["domain hole64 and maxphysaddr"].evidence == "hole64 2048G, maxphysaddr passthrough, 1 hostdevs"


def test_hypervisor_small_hole_host_driver_and_shared_group():
    results = {r.check: r for r in check_hypervisor(*host_evidence(32, driver="nvidia", group="0000:18:00.0 0000:19:00.0"))}
    assert results["devices bound to vfio-pci"].status == FAIL and "0000:18:00.0: nvidia" in results["devices bound to vfio-pci"].evidence
    assert results["IOMMU groups"].status == WARN and "shares its group with 0000:19:00.0" in results["IOMMU groups"].evidence
    hole = results["domain hole64 and maxphysaddr"]
    assert hole.status == FAIL and "pci-hole64-size 32G, planned 2048G" in hole.evidence


def test_host_commands_are_the_allowlisted_templates():
    cmds = host_commands("gpu-h100", ["0000:18:00.0"])
    assert all(is_read_only(c) for c in cmds.values()) and len(cmds) == 5
    assert not is_read_only("readlink /sys/bus/pci/devices/0000:18:00.0/driver && reboot")
    assert not is_read_only("virsh -c qemu:///system dumpxml gpu-h100; virsh destroy gpu-h100")


def test_nothing_collected_fails_rather_than_passes():
    results = diagnose(Expected(vm="vm", gpu_count=8, nvswitch=True), Evidence(errors={"guest": "ssh: timed out"}))
    assert exit_code(results) == 1
    assert any(r.check == "guest reachable" and r.status == FAIL for r in results)


def test_redaction():
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    text = (f"{key}\nclient-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ==\n"
            "token: eyJhbGciOiJSUzI1NiJ9.payload.sig\nAuthorization: Bearer abc.def.ghi\n"
            "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef\npassword=hunter2hunter2\n"
            "grafana admin s3cr3t-value-42 kept\nRegistered device plugin for 'nvidia.com/gpu' with Kubelet\n")
    out = redact(text, ["s3cr3t-value-42"])
    for secret in ("b3BlbnNzaC1rZXktdjEAAAAA", "LS0tLS1CRUdJTiBSU0Eg", "eyJhbGciOiJSUzI1NiJ9", "abc.def.ghi", "abcdef.0123456789abcdef",
                   "hunter2hunter2", "s3cr3t-value-42"):
        assert secret not in out, secret
    assert "[redacted private key]" in out and "Registered device plugin for 'nvidia.com/gpu' with Kubelet" in out


def test_unreachable_sources_do_not_pretend():
    """No guest, no hypervisor, no cluster: one FAIL (the guest) and WARN/SKIP, never a PASS or a misleading FAIL."""
    x = Expected(vm="vm", gpu_count=1, runtime_handler="nvidia", monitoring=True, host_addresses=("0000:18:00.0",))
    results = diagnose(x, Evidence(errors={"guest": "ssh: refused", "host": "ssh: no route", "node": "no kubeconfig"}))
    by = {(r.section, r.check): r.status for r in results}
    assert by == {("hypervisor", "hypervisor reachable"): WARN, ("guest driver", "guest reachable"): FAIL,
                  ("runtime", "runtime checks"): "SKIP", ("kubernetes", "cluster reachable"): WARN,
                  ("workloads", "GPU pods"): "SKIP", ("monitoring", "monitoring"): "SKIP", ("drift", "drift checks"): "SKIP"}


def runtime_results(runtime: str, guest: dict[str, str]) -> dict[str, object]:
    from doctor.diagnosis import check_runtime

    x = Expected(vm="vm", gpu_count=2, runtime=runtime, toolkit_version="1.17.8")
    e = Evidence(guest={k: CommandResult(k, 0, v) for k, v in guest.items()})
    return {r.check: r for r in check_runtime(x, e)}


def test_docker_runtime_and_cdi_listing():
    r = runtime_results("docker", {
        "docker-daemon": '{"default-runtime": "nvidia", "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}',
        "nvidia-ctk": "NVIDIA Container Toolkit CLI version 1.17.7\ncommit: 0\n",
        "cdi": "nvidia.com/gpu=0\nnvidia.com/gpu=GPU-c7a0294c-c2c2-5476-438c-fb468eaa223b\nnvidia.com/gpu=all\n",
    })
    assert r["docker nvidia runtime"].status == PASS
    assert r["toolkit version"].status == WARN and r["toolkit version"].evidence == "nvidia-ctk 1.17.7, pinned 1.17.8"
    assert r["CDI spec"].status == WARN and "GPUs not in it: 1" in r["CDI spec"].evidence


def test_containerd_v3_config_with_nvidia_runtime():
    toml = ('version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]\n  runtime_type = "io.containerd.runc.v2"\n'
            '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]\n  BinaryName = "/usr/bin/nvidia-container-runtime"\n')
    r = runtime_results("containerd", {"containerd-config": toml, "nvidia-ctk": "NVIDIA Container Toolkit CLI version 1.17.8\n"})
    assert r["containerd nvidia runtime"].status == PASS and r["toolkit version"].status == PASS


def test_a_vm_without_gpus_is_not_asked_for_the_nvidia_runtime():
    """Its container-runtime phase installs no toolkit and configures no nvidia runtime (issue 26 item 2)."""
    from doctor.diagnosis import SKIP, check_runtime
    ev = Evidence(guest={"containerd-config": CommandResult("containerd config dump", 0, 'version = 2\n'),
                         "nvidia-ctk": CommandResult("nvidia-ctk --version", 127, "", "nvidia-ctk: command not found")})
    results = check_runtime(Expected(vm="cp-0", gpu_count=0, runtime_handler="nvidia"), ev)
    assert [(r.check, r.status) for r in results] == [("runtime checks", SKIP)]
