"""The real program under Pulumi's mock monitor, in preview and update mode."""

from __future__ import annotations

import copy

import pytest

from render.identity import derived_mac
from config.errors import ConfigError
from tests.conftest import run_stack
from tools.mockrun import SECRET_SIG

DOMAIN = "libvirt:index/domain:Domain"
VOLUME = "libvirt:index/volume:Volume"
CLOUDINIT = "libvirt:index/cloudInitDisk:CloudInitDisk"
VM = "gpu-stack:index:GpuPassthroughVm"


@pytest.mark.parametrize("preview", [True, False])
def test_dev_stack_registers_a_vm(dev, preview):
    result = run_stack(dev, preview=preview)
    assert [r.name for r in result.of_type(VM)] == ["gpu-dev-0"]
    assert [r.name for r in result.of_type(DOMAIN)] == ["gpu-dev-0-domain"]
    assert sorted(r.name for r in result.of_type(VOLUME)) == ["gpu-dev-0-root", "lab-gpu-1-base-image"]


def test_preview_leaves_computed_outputs_unknown(dev):
    result = run_stack(dev, preview=True)
    vm = result.outputs["vms"]["gpu-dev-0"]
    assert vm["domainId"] == "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
    assert vm["mac"] == derived_mac("test", "gpu-dev-0")


def test_update_resolves_ip_and_host_key(dev):
    result = run_stack(dev, preview=False)
    vm = result.outputs["vms"]["gpu-dev-0"]
    assert vm["domainId"] == "gpu-dev-0-domain-id"
    assert vm["ip"].startswith("192.168.122.")
    assert vm["hostPublicKey"].startswith("ssh-ed25519 ")


def test_children_are_parented_and_named_after_the_component(dev):
    result = run_stack(dev)
    children = result.children_of("gpu-dev-0")
    assert {c.type for c in children} == {DOMAIN, VOLUME, CLOUDINIT, "tls:index/privateKey:PrivateKey", "command:remote:Command"}
    assert all(c.name.startswith("gpu-dev-0-") for c in children)
    assert all(c.provider == "libvirt-lab-gpu-1" for c in children if c.type.startswith("libvirt:"))


def test_malformed_pci_address_registers_nothing(dev):
    dev["vms"][0]["gpus"][0]["address"] = "0000:3b:00"
    registered: list = []
    with pytest.raises(ConfigError) as info:
        run_stack(dev, on_register=lambda t, n: registered.append((t, n)))
    assert "gpu-stack:vms[0].gpus[0].address" in str(info.value)
    assert registered == []


def test_production_protects_domain_and_retains_disks(dev):
    dev["production"] = True
    result = run_stack(dev)
    domain = result.named("gpu-dev-0-domain")
    root = result.named("gpu-dev-0-root")
    assert domain.protect and root.protect and root.retain_on_delete
    assert result.named("lab-gpu-1-base-image").retain_on_delete


def test_dev_does_not_protect(dev):
    result = run_stack(dev)
    assert not any(r.protect for r in result.resources)


def test_domain_has_fixed_name_and_ignores_cloudinit_hot_swap(dev):
    domain = run_stack(dev).named("gpu-dev-0-domain")
    assert domain.inputs["name"] == "gpu-dev-0"
    assert domain.ignore_changes == ["cloudinit", "autostart"]
    assert domain.delete_before_replace
    assert domain.inputs["qemuAgent"] is False  # provider issue #1050: agent reads fail during create


def test_autostart_is_set_only_after_the_domain_started(dev):
    """The provider sets autostart before its start (v0.8.1): off at create, then `virsh autostart` on the
    hypervisor once the Domain exists, over SSH with the provider's key and the pinned host key."""
    result = run_stack(dev, preview=False, secrets={"sshPrivateKey": "guest-key", "hypervisorSshPrivateKey": "hv-key", "grafanaAdminPassword": "p"})
    domain, autostart = result.named("gpu-dev-0-domain"), result.named("gpu-dev-0-autostart")
    assert domain.inputs["autostart"] is False and "autostart" in domain.ignore_changes
    assert autostart.depends_on == ["gpu-dev-0-domain"] and autostart.parent == "gpu-dev-0"
    assert autostart.inputs["create"] == "virsh -c qemu:///system autostart gpu-dev-0"
    assert autostart.inputs["connection"][SECRET_SIG]  # it holds the key: the whole connection is secret
    conn = autostart.inputs["connection"]["value"]
    assert (conn["host"], conn["user"], conn["hostKey"], conn["privateKey"]) == ("lab-gpu-1.lab.local", "root", dev["hosts"][0]["hostKey"], "hv-key")
    again = run_stack(dev, preview=False).named("gpu-dev-0-autostart")
    assert again.inputs["triggers"] == autostart.inputs["triggers"]  # deterministic
    for path, value in ((("vms", 0, "memoryGib"), 32), (("vms", 0, "network", "mac"), "52:54:00:12:34:56")):
        changed = copy.deepcopy(dev)  # memory and the NIC are ForceNew: the replaced domain needs autostart again
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert run_stack(changed, preview=False).named("gpu-dev-0-autostart").inputs["triggers"] != autostart.inputs["triggers"], path


def test_a_local_hypervisor_gets_a_local_autostart_command(dev):
    dev["hosts"][0]["libvirtUri"] = "qemu:///system"
    dev["hosts"][0].pop("hostKey")
    autostart = run_stack(dev).named("gpu-dev-0-autostart")
    assert autostart.type == "command:local:Command" and autostart.inputs["create"] == "virsh -c qemu:///system autostart gpu-dev-0"


def test_cloud_init_user_data_is_secret(dev):
    cloudinit = run_stack(dev, preview=False).named("gpu-dev-0-cloudinit")
    user_data = cloudinit.inputs["userData"]
    assert user_data[SECRET_SIG]
    assert "ssh_authorized_keys" in user_data["value"] and "ed25519_private" in user_data["value"]


def test_explicit_mac_is_used_verbatim(dev):
    dev["vms"][0]["network"]["mac"] = "52:54:00:A9:A2:11"
    nic = run_stack(dev).named("gpu-dev-0-domain").inputs["networkInterfaces"][0]
    assert nic["mac"] == "52:54:00:a9:a2:11"


def test_derived_mac_is_stable_unicast_and_per_vm():
    mac = derived_mac("prod", "ubuntu-gpu")
    assert mac == derived_mac("prod", "ubuntu-gpu")
    assert mac.startswith("52:54:00:")
    assert derived_mac("prod", "other") != mac
    assert int(mac[:2], 16) & 1 == 0


def test_same_config_gives_identical_stylesheet(dev):
    first = run_stack(dev).named("gpu-dev-0-domain").inputs["xml"]["xslt"]
    second = run_stack(dev, preview=False).named("gpu-dev-0-domain").inputs["xml"]["xslt"]
    assert first == second


def test_monitor_and_transformation_see_the_same_resources(dev):
    result = run_stack(dev, preview=False)
    urn_names = sorted(urn.rsplit("::", 1)[1] for urn in result.registered)
    assert urn_names == sorted(r.name for r in result.resources)
    domain_urn = next(u for u in result.registered if u.endswith("::gpu-dev-0-domain"))
    assert "GpuPassthroughVm$libvirt:index/domain:Domain" in domain_urn
    assert result.registered[domain_urn].id == "gpu-dev-0-domain-id"
