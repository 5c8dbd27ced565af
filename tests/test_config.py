"""Config validation: each rule fails with the exact key and what is accepted."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import seed000_host, seed000_vm

SECRETS = {"sshPrivateKey", "grafanaAdminPassword"}


def problems(raw: dict, secrets: set[str] = SECRETS) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, secrets)
    out: dict[str, str] = {}
    for i in info.value.issues:
        out[i.path] = f"{out[i.path]} | {i.message}" if i.path in out else i.message
    return out


def test_dev_stack_is_valid(dev):
    cfg, placements = parse_stack_config(dev, SECRETS)
    assert cfg.vms[0].gpus[0].address == "0000:3b:00.0"
    assert placements["gpu-dev-0"].cells[0].host_node == 0


def test_error_names_the_key_and_what_is_accepted(dev):
    dev["vms"][0]["gpus"][0]["address"] = "3b:00.0"
    p = problems(dev)
    assert list(p) == ["vms[0].gpus[0].address"]
    assert "0000:17:00.0" in p["vms[0].gpus[0].address"]
    with pytest.raises(ConfigError) as info:
        parse_stack_config(dev, SECRETS)
    assert "gpu-stack:vms[0].gpus[0].address" in str(info.value)


def test_pci_address_is_normalised(dev):
    dev["vms"][0]["gpus"][0]["address"] = "0000:3B:00.0"
    cfg, _ = parse_stack_config(dev, SECRETS)
    assert cfg.vms[0].gpus[0].address == "0000:3b:00.0"


def test_unknown_keys_list_the_accepted_ones(dev):
    dev["vms"][0]["gpuz"] = []
    dev["vm"] = []
    p = problems(dev)
    assert "gpus" in p["vms[0].gpuz"] and "memoryGib" in p["vms[0].gpuz"]
    assert "vms" in p["vm"]


def test_unknown_gpu_model_lists_the_catalog(dev):
    dev["vms"][0]["gpus"][0]["model"] = "H900"
    assert "H800-SXM5-80GB" in problems(dev)["vms[0].gpus[0].model"]


def test_same_pci_address_twice(dev):
    dev["vms"][0]["gpus"].append(dict(dev["vms"][0]["gpus"][0]))
    p = problems(dev)
    assert "already assigned" in p["vms[0].gpus[1].address"]


def test_same_pci_address_on_two_vms(dev):
    other = dict(dev["vms"][0], name="gpu-dev-1")
    dev["vms"].append(other)
    assert "already assigned to vms[0].gpus[0]" in problems(dev)["vms[1].gpus[0].address"]


def test_same_address_on_different_hosts_is_fine(dev):
    dev["hosts"].append(dict(dev["hosts"][0], name="lab-gpu-2"))
    dev["vms"].append(dict(dev["vms"][0], name="gpu-dev-1", host="lab-gpu-2"))
    cfg, _ = parse_stack_config(dev, SECRETS)
    assert len(cfg.vms) == 2


def test_both_device_plugins_enabled(dev):
    dev["addons"]["gpuOperator"] = {"enabled": True}
    p = problems(dev)
    assert "devicePluginEnabled: false" in p["addons.devicePlugin.enabled"]


def test_operator_with_its_plugin_off_is_fine(dev):
    dev["addons"]["gpuOperator"] = {"enabled": True, "devicePluginEnabled": False}
    parse_stack_config(dev, SECRETS)


@pytest.mark.parametrize("replicas", [0, 1])
def test_time_slicing_replicas_below_two(dev, replicas):
    dev["addons"]["devicePlugin"]["timeSlicing"]["replicas"] = replicas
    assert "greater than or equal to 2" in problems(dev)["addons.devicePlugin.timeSlicing.replicas"]


def test_vcpus_beyond_host_capacity(dev):
    dev["vms"][0]["vcpus"] = 63  # 64 CPUs, 2 reserved
    assert "62 CPUs" in problems(dev)["vms[0].vcpus"]


def test_memory_beyond_host_capacity(dev):
    dev["vms"][0]["memoryGib"] = 250  # 256 GiB, 8 reserved
    assert "248 GiB" in problems(dev)["vms[0].memoryGib"]


def test_vcpus_beyond_one_numa_node(dev):
    dev["vms"][0]["vcpus"] = 40  # GPU on node 0, which has 30 unreserved CPUs
    assert "NUMA node 0 has 30 unpinned CPUs left" in problems(dev)["vms[0].vcpus"]


def test_vcpu_pinned_outside_its_numa_node(dev):
    dev["vms"][0]["numa"] = {"cells": [{"hostNode": 0, "vcpus": 8, "memoryGib": 64, "hostCpus": "1-4,16-19"}]}
    p = problems(dev)
    assert "[16, 17, 18, 19] are not on host lab-gpu-1 NUMA node 0" in p["vms[0].numa.cells[0].hostCpus"]


def test_explicit_cells_must_sum_to_the_vm(dev):
    dev["vms"][0]["numa"] = {"cells": [{"hostNode": 0, "vcpus": 4, "memoryGib": 32}]}
    p = problems(dev)
    assert "must be equal" in p["vms[0].numa.cells"]


@pytest.mark.parametrize("mac, why", [
    ("52:54:00:zz:00:01", "not a MAC address"),
    ("52:54:00:00:01", "not a MAC address"),
    ("01:00:5e:00:00:01", "multicast"),
    ("ff:ff:ff:ff:ff:ff", "multicast"),
])
def test_invalid_or_multicast_mac(dev, mac, why):
    dev["vms"][0]["network"]["mac"] = mac
    assert why in problems(dev)["vms[0].network.mac"]


def test_device_plugin_too_new_for_kubernetes_1_23(dev):
    """Seed 001: Kubernetes 1.23.17 needs plugin 0.11, not the then-latest 0.17."""
    dev["kubernetes"]["version"] = "1.23.17"
    dev["addons"]["devicePlugin"].pop("timeSlicing")
    dev["addons"]["devicePlugin"]["version"] = "0.17.4"
    message = problems(dev)["addons.devicePlugin.version"]
    assert "supports Kubernetes 1.25 to 1.32, not 1.23.17" in message
    assert "0.11" in message


def test_device_plugin_0_11_on_kubernetes_1_23_is_fine(dev):
    dev["kubernetes"]["version"] = "1.23.17"
    dev["kubernetes"]["packageRepository"] = "https://mirror.lab/kubernetes/v1.23"
    dev["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0", "deploy": "static"}
    parse_stack_config(dev, SECRETS)


def test_time_slicing_needs_plugin_0_13(dev):
    dev["kubernetes"]["version"] = "1.24.17"
    dev["addons"]["devicePlugin"]["version"] = "0.12.3"
    assert ">= 0.13" in problems(dev)["addons.devicePlugin.timeSlicing"]


def test_mig_needs_plugin_0_12(dev):
    dev["kubernetes"]["version"] = "1.23.17"
    dev["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0", "migStrategy": "single"}
    assert ">= 0.12" in problems(dev)["addons.devicePlugin.migStrategy"]


def test_unknown_device_plugin_version(dev):
    dev["addons"]["devicePlugin"]["version"] = "0.99.0"
    assert "not in the compatibility table" in problems(dev)["addons.devicePlugin.version"]


def test_missing_secrets_are_named(dev):
    p = problems(dev, secrets=set())
    assert "pulumi config set --secret gpu-stack:sshPrivateKey" in p["sshPrivateKey"]
    assert "grafanaAdminPassword" in p


def test_join_needs_target_and_token(dev):
    dev["kubernetes"]["mode"] = "join"
    p = problems(dev)
    assert "caCertHash" in p["kubernetes.join"]
    assert "joinToken" in p


def test_unknown_host_reference(dev):
    dev["vms"][0]["host"] = "lab-gpu-9"
    assert "declared hosts: ['lab-gpu-1']" in problems(dev)["vms[0].host"]


def test_multi_node_host_needs_gpu_numa_node(dev):
    del dev["vms"][0]["gpus"][0]["numaNode"]
    assert "numa_node" in problems(dev)["vms[0].gpus[0].numaNode"]


def test_secure_boot_firmware_with_gpus_is_refused(dev):
    """Seed 000: Secure Boot OVMF gave a black screen and GPUs that failed to initialise."""
    dev["hosts"][0]["firmware"] = {"code": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "varsTemplate": "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"}
    assert "allowSecureBootWithGpus" in problems(dev)["hosts[0].firmware.code"]
    dev["vms"][0]["firmware"] = {"allowSecureBootWithGpus": True}
    parse_stack_config(dev, SECRETS)


def test_mmio_override_smaller_than_needed(dev):
    dev["vms"][0]["mmioHole64Gib"] = 64  # one L40S needs 128
    assert "at least 128 GiB" in problems(dev)["vms[0].mmioHole64Gib"]


def test_mmio_override_not_a_power_of_two(dev):
    dev["vms"][0]["mmioHole64Gib"] = 192
    assert "power of two" in problems(dev)["vms[0].mmioHole64Gib"]


def test_phys_bits_too_low_for_ram_plus_hole():
    host = seed000_host()
    host["physAddrBits"] = 40
    raw = {"hosts": [host], "vms": [seed000_vm()]}
    p = problems(raw)
    assert "needs 42 physical address bits" in p["vms[0].memoryGib"]


def test_seed000_topology_is_valid():
    raw = {"hosts": [seed000_host()], "vms": [seed000_vm()], "guest": {
        "os": {"family": "ubuntu", "version": "22.04"},
        "sshPublicKey": "ssh-ed25519 AAAA test",
        "nvidia": {"driverVersion": "570.172.08"}}}
    cfg, placements = parse_stack_config(raw, SECRETS)
    cells = placements["ubuntu-gpu"].cells
    assert [c.host_node for c in cells] == [0, 1]
    assert sum(c.memory_mib for c in cells) == 256 * 1024
    assert len(cfg.vms[0].nvswitches) == 4


def test_models_are_frozen(dev):
    cfg, _ = parse_stack_config(dev, SECRETS)
    with pytest.raises(Exception):
        cfg.vms[0].vcpus = 99  # type: ignore[misc]


def test_gpu_taint_on_every_node_of_an_init_cluster_is_refused(dev):
    dev["kubernetes"]["nodeTaints"] = [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert "CoreDNS" in problems(dev)["kubernetes.nodeTaints"]


def test_docker_needs_kubernetes_with_dockershim(dev):
    dev["guest"]["containerRuntime"] = {"name": "docker"}
    assert "dockershim" in problems(dev)["guest.containerRuntime.name"]


def test_kubernetes_below_1_24_needs_a_package_repository(dev):
    """pkgs.k8s.io starts at v1.24: seed 001's 1.23.17 would get a URL that does not exist."""
    dev["kubernetes"]["version"] = "1.23.17"
    dev["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0", "deploy": "static"}
    message = problems(dev)["kubernetes.packageRepository"]
    assert "pkgs.k8s.io" in message and "v1.24" in message and "mirror" in message
    dev["kubernetes"]["version"] = "1.24.17"
    dev["addons"]["devicePlugin"] = {"enabled": True, "version": "0.13.0"}
    parse_stack_config(dev, SECRETS)


def test_existing_cluster_below_1_24_installs_no_kubeadm_and_needs_no_repository(dev):
    dev["kubernetes"]["version"] = "1.23.17"
    dev["kubernetes"]["mode"] = "existing"
    dev["addons"]["devicePlugin"] = {"enabled": True, "version": "0.11.0", "deploy": "static"}
    parse_stack_config(dev, SECRETS | {"kubeconfig"})


def test_docker_repository_must_be_a_url_without_trailing_slash(dev):
    dev["guest"]["containerRuntime"] = {"dockerRepository": "https://mirror.lab/docker/"}
    assert "guest.containerRuntime.dockerRepository" in problems(dev)
