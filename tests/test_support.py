"""The support catalog (config/support.py): warnings when support has ended or ends within 90 days, naming the date
and the key; refusals for a driver branch a configured GPU does not have, and for a Kubernetes version the device
plugin or GPU Operator pin does not support. Today's date is injected, so these do not change with the calendar."""

from __future__ import annotations

from datetime import date

import pytest

from config import support
from stacks.checks import config_warnings
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import stack_file

SECRETS = {"sshPrivateKey", "grafanaAdminPassword", "kubeconfig", "joinToken", "vsphereUser", "vspherePassword"}
TODAY = date(2026, 12, 6)


def _config(raw: dict):
    cfg, _ = parse_stack_config(raw, SECRETS)
    return cfg


def _warnings(raw: dict, today: date = TODAY) -> dict[str, str]:
    return {w.path: w.message for w in config_warnings(_config(raw), today)}


def _refusals(raw: dict) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_stack_config(raw, SECRETS)
    out: dict[str, str] = {}
    for i in info.value.issues:
        out[i.path] = f"{out[i.path]} | {i.message}" if i.path in out else i.message
    return out


def test_every_row_cites_a_source():
    rows = [*support.KUBERNETES_MINORS.values(), *support.DRIVER_BRANCHES.values()]
    assert all(r.source.startswith("https://") for r in rows)
    assert all(s.startswith("https://docs.nvidia.com/") for _, s in support.LAST_DRIVER_BRANCH.values())
    assert support.LAST_DRIVER_BRANCH["pascal"][0] == support.LAST_DRIVER_BRANCH["volta"][0] == 580


def test_kubernetes_past_its_end_is_a_warning_naming_the_date(dev):
    dev["kubernetes"]["version"] = "1.32.4"
    message = _warnings(dev)["kubernetes.version"]
    assert "past its end of support" in message and "2026-02-28" in message and "pastEndOfSupport" in message


def test_kubernetes_within_90_days_of_its_end_is_a_warning(dev):
    dev["kubernetes"]["version"] = "1.35.9"
    message = _warnings(dev)["kubernetes.version"]
    assert "2027-02-28" in message and "in 84 days" in message
    assert "kubernetes.version" not in _warnings(dev, date(2026, 11, 29))  # 91 days before: quiet


def test_supported_kubernetes_and_driver_say_nothing(dev):
    dev["kubernetes"]["version"] = "1.36.5"
    dev["guest"]["nvidia"]["driverVersion"] = "580.173.02"
    assert _warnings(dev) == {}
    assert "2027-06-28" in _warnings(dev, date(2027, 4, 1))["kubernetes.version"]


def test_driver_branch_near_its_end_names_the_month(dev):
    """R595 ends "March 2027", taken as 2027-03-01 (support may stop any day of that month): 85 days after TODAY."""
    dev["guest"]["nvidia"]["driverVersion"] = "595.91.07"
    message = _warnings(dev)["guest.nvidia.driverVersion"]
    assert "March 2027" in message and "in 85 days" in message and "R580 long-term support to June 2028" in message
    assert "guest.nvidia.driverVersion" not in _warnings(dev, date(2026, 11, 30))  # 91 days before


@pytest.mark.parametrize("version, why", [
    ("535.261.03", "ended June 2026"),
    ("570.172.08", "not listed as supported on https://docs.nvidia.com/datacenter/tesla/drivers/620/"),
])
def test_ended_driver_branch_is_a_warning(dev, version, why):
    dev["guest"]["nvidia"]["driverVersion"] = version
    message = _warnings(dev)["guest.nvidia.driverVersion"]
    assert "past its end of support" in message and why in message


def test_declared_reason_is_in_the_warning():
    raw = stack_file("esxi")
    message = _warnings(raw)["kubernetes.version"]
    assert "2023-02-28" in message and f"kept on purpose (kubernetes.pastEndOfSupport: {raw['kubernetes']['pastEndOfSupport']})" in message


def test_driver_branch_past_the_gpus_last_is_refused():
    """P100 (Pascal): NVIDIA's architecture matrix gives R580 as its last driver branch."""
    raw = stack_file("esxi")
    raw["guest"]["nvidia"]["driverVersion"] = "595.91.07"
    raw["guest"]["nvidia"]["runfileUrl"] = "http://mirror.lab.local/nvidia/NVIDIA-Linux-x86_64-595.91.07.run"
    message = _refusals(raw)["guest.nvidia.driverVersion"]
    assert "P100-PCIE-16GB" in message and "vms[0].gpus[0]" in message and "branch 595" in message
    assert "last branch that supports Pascal is 580" in message


def test_580_on_pascal_is_accepted():
    raw = stack_file("esxi")
    raw["guest"]["nvidia"]["driverVersion"] = "580.173.02"
    _config(raw)


def operator_fleet() -> dict:
    """The fleet example (Ubuntu 24.04) with the GPU Operator instead of its device plugin."""
    raw = stack_file("fleet")
    raw["addons"].pop("devicePlugin")
    raw["addons"]["gpuOperator"] = {"enabled": True}
    return raw


def test_gpu_operator_refuses_kubernetes_outside_its_window():
    raw = operator_fleet()
    raw["kubernetes"]["version"] = "1.37.2"
    message = _refusals(raw)["addons.gpuOperator.version"]
    assert "GPU Operator v26.7.0 supports Kubernetes 1.32 to 1.36 on ubuntu 24.04, not 1.37.2" in message


def test_gpu_operator_window_follows_the_guest_os():
    raw = operator_fleet()
    raw["kubernetes"]["version"] = "1.32.13"
    _config(raw)  # Ubuntu 24.04: 1.32 to 1.36
    raw["guest"]["os"] = {"family": "ubuntu", "version": "22.04"}
    assert "1.33 to 1.36 on ubuntu 22.04" in _refusals(raw)["addons.gpuOperator.version"]


def test_gpu_operator_not_in_the_table_is_refused():
    raw = operator_fleet()
    raw["addons"]["gpuOperator"]["version"] = "v25.3.0"
    assert "not in the compatibility table" in _refusals(raw)["addons.gpuOperator.version"]


def test_device_plugin_refuses_kubernetes_past_its_window(dev):
    dev["kubernetes"]["version"] = "1.38.0"
    assert "device plugin 0.20.0 supports Kubernetes 1.28 to 1.37, not 1.38.0" in _refusals(dev)["addons.devicePlugin.version"]
    dev["kubernetes"]["version"] = "1.37.2"
    _config(dev)
