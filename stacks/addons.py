"""The Kubernetes half of a stack: runtime class, device plugin or GPU Operator, monitoring.

Runs against an explicit Kubernetes provider whose kubeconfig is the init
VM's (secret) bootstrap output, or gpu-stack:kubeconfig for a cluster that
already exists. Everything waits for the nodes' verify phase.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.dcgm_service_monitor import DcgmServiceMonitor, DcgmServiceMonitorArgs, release_labels
from components.device_plugin import DevicePlugin, DevicePluginArgs
from components.gpu_operator import GpuOperator, GpuOperatorArgs
from components.gpu_quotas import GpuQuotas
from components.gpu_smoke_test import GpuSmokeTest, GpuSmokeTestArgs
from components.monitoring_stack import MonitoringStack, MonitoringStackArgs
from components.nvidia_runtime import NvidiaRuntimeClass
from render.helm_values import uses_runtime_class
from render.k8s_manifests import RUNTIME_CLASS
from stacks.config import StackConfig
from stacks.load import LoadedStack


def gpu_resource(cfg: StackConfig) -> str:
    ts = cfg.addons.device_plugin.time_slicing
    if cfg.addons.device_plugin.enabled and ts is not None and ts.rename_by_default:
        return "nvidia.com/gpu.shared"
    return "nvidia.com/gpu"


def expected_allocatable(cfg: StackConfig) -> dict[str, dict[str, int]]:
    """What each node should report as allocatable once the plugin runs (MIG profiles not counted)."""
    dp = cfg.addons.device_plugin
    replicas = dp.time_slicing.replicas if dp.enabled and dp.time_slicing is not None else 1
    return {vm.name: {gpu_resource(cfg): len(vm.gpus) * replicas} for vm in cfg.vms if vm.gpus}


def build_addons(stack: LoadedStack, kubeconfig: pulumi.Input[str] | None, after: list[pulumi.Resource]) -> None:
    cfg = stack.config
    a = cfg.addons
    if cfg.kubernetes is None or kubeconfig is None:
        return
    if not (a.device_plugin.enabled or a.gpu_operator.enabled or a.monitoring.enabled or a.gpu_quotas):
        return
    provider = k8s.Provider("kubernetes", kubeconfig=kubeconfig)
    runtime_class = RUNTIME_CLASS if uses_runtime_class(cfg.guest) else None
    deps = list(after)
    if runtime_class and not a.gpu_operator.enabled:
        deps.append(NvidiaRuntimeClass("nvidia-runtime-class", provider, after))

    monitoring = None
    if a.monitoring.enabled:
        monitoring = MonitoringStack("monitoring", MonitoringStackArgs(a, stack.secrets["grafanaAdminPassword"], provider),
                                     pulumi.ResourceOptions(depends_on=after))
    ready: list[pulumi.Resource] = []
    if a.device_plugin.enabled:
        ready.append(DevicePlugin("device-plugin", DevicePluginArgs(a, cfg.guest, runtime_class, provider, deps)).ready)
    if a.gpu_operator.enabled:
        labels = release_labels(monitoring) if monitoring is not None else {}
        operator_after = deps + ([monitoring.release] if monitoring is not None else [])
        ready.append(GpuOperator("gpu-operator", GpuOperatorArgs(a, cfg.guest, labels, provider, operator_after)).ready)
    if monitoring is not None and (a.device_plugin.enabled or a.gpu_operator.enabled):
        expected = {vm.name: len(vm.gpus) for vm in cfg.vms if vm.gpus}
        DcgmServiceMonitor("dcgm", DcgmServiceMonitorArgs(
            "operator" if a.gpu_operator.enabled else "standalone", a, monitoring, expected, runtime_class, provider, deps,
            tuple(vm.name for vm in cfg.vms if vm.nvswitches)))
    if a.gpu_quotas:
        GpuQuotas("gpu-quotas", a.gpu_quotas, provider, pulumi.ResourceOptions(depends_on=after))
    if a.smoke_test and ready:
        GpuSmokeTest("gpu-smoke-test", GpuSmokeTestArgs(a, runtime_class, gpu_resource(cfg), provider, ready))
    pulumi.export("expectedAllocatable", expected_allocatable(cfg))
