"""The Kubernetes half of a stack: pod network, storage, runtime class, device plugin or GPU Operator, monitoring, gates.

Runs against an explicit Kubernetes provider whose kubeconfig is the init
VM's (secret) bootstrap output, or gpu-stack:kubeconfig for a cluster that
already exists. Everything waits for the nodes' verify phase; in mode init
everything also waits for the pod network (no CNI: no Ready node, no pod
runs). The readiness gate runs last and checks what they converged to.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.dcgm_service_monitor import DcgmServiceMonitor, DcgmServiceMonitorArgs
from components.device_plugin import DevicePlugin, DevicePluginArgs
from components.gpu_operator import GpuOperator, GpuOperatorArgs
from components.gpu_quotas import GpuQuotas
from components.gpu_smoke_test import GpuSmokeTest, GpuSmokeTestArgs
from components.guest_command import GuestConnection
from components.local_path_storage import LocalPathStorage
from components.monitoring_stack import MonitoringStack, MonitoringStackArgs
from components.nvidia_runtime import NvidiaRuntimeClass
from components.pod_network import PodNetwork, PodNetworkArgs
from components.burnin_gate import BurnInGate, BurnInGateArgs
from components.readiness_gate import ReadinessGate, ReadinessGateArgs
from config.catalog import nvlink_generation
from render.drift_check import drift_alert_group, drift_check_objects
from render.burnin import node_plans
from render.burnin_gate import burnin_phase, parse_gate_output, plan_summary
from render.guest_scripts import readiness_phase
from render.helm_values import monitor_labels, prometheus_storage, uses_runtime_class
from render.k8s_manifests import GPU_PRESENT_LABEL, RUNTIME_CLASS, SMOKE_JOB, SMOKE_NAMESPACE
from render.nvidia_packages import fabric_packages
from config.models import StackConfig
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


def plugin_logs_command(cfg: StackConfig) -> str:
    """Where seed 003 step 4 reads the device plugin's registration, on this stack's path."""
    a = cfg.addons
    if a.device_plugin.enabled and a.device_plugin.deploy == "helm":
        return f"kubectl -n {a.device_plugin.namespace} logs ds/nvidia-device-plugin --tail=50"
    if a.device_plugin.enabled:
        return "kubectl -n kube-system logs ds/nvidia-device-plugin-daemonset --tail=50"
    return f"kubectl -n {a.gpu_operator.namespace} logs ds/nvidia-device-plugin-daemonset --tail=50"


def gate_plan(cfg: StackConfig, smoke: bool) -> list[str]:
    """The readiness gates, in words (plan summary and the `readinessGates` output)."""
    resource = gpu_resource(cfg)
    gates = [f"node {vm} Ready, allocatable {resource} = {counts[resource]}" for vm, counts in sorted(expected_allocatable(cfg).items())]
    if smoke:
        gates.append(f"Job {SMOKE_NAMESPACE}/{SMOKE_JOB} succeeds")
    return gates


def build_addons(stack: LoadedStack, kubeconfig: pulumi.Input[str] | None, after: list[pulumi.Resource],
                 gate_connection: GuestConnection | None = None) -> None:
    """gate_connection: the first VM, where the readiness gate runs kubectl (None: no gate)."""
    cfg = stack.config
    a = cfg.addons
    k = cfg.kubernetes
    if k is None or kubeconfig is None:
        return
    if not (a.device_plugin.enabled or a.gpu_operator.enabled or a.monitoring.enabled or a.gpu_quotas):
        return
    provider = k8s.Provider("kubernetes", kubeconfig=kubeconfig)
    runtime_class = RUNTIME_CLASS if uses_runtime_class(cfg.guest) else None
    after = list(after)
    if k.mode == "init" and a.pod_network.enabled:
        pod_network = PodNetwork("pod-network", PodNetworkArgs(a, k, len(cfg.vms), provider, after))
        after.append(pod_network.release)
        pulumi.export("podNetwork", {"chart": "tigera-operator", "version": a.pod_network.version, "podCidr": k.pod_cidr})
    deps = list(after)
    if runtime_class and not a.gpu_operator.enabled:
        # VMs without GPUs have no nvidia handler: the class keeps its pods on the GPU nodes' label
        selector = ({GPU_PRESENT_LABEL: k.node_labels[GPU_PRESENT_LABEL]}
                    if any(not vm.gpus for vm in cfg.vms) and GPU_PRESENT_LABEL in k.node_labels else None)
        deps.append(NvidiaRuntimeClass("nvidia-runtime-class", provider, after, node_selector=selector))

    monitoring = None
    if a.monitoring.enabled:
        storage = prometheus_storage(a.monitoring, k)
        monitoring_after = list(after)
        if storage.install_local_path:
            monitoring_after.append(LocalPathStorage("local-path-storage", a, provider, after).objects)
        monitoring = MonitoringStack("monitoring", MonitoringStackArgs(a, stack.secrets["grafanaAdminPassword"], provider, storage),
                                     pulumi.ResourceOptions(depends_on=monitoring_after))
        pulumi.export("storage", storage.describe(a.monitoring.storage_gib))
    ready: list[pulumi.Resource] = []
    if a.device_plugin.enabled:
        ready.append(DevicePlugin("device-plugin", DevicePluginArgs(a, cfg.guest, runtime_class, provider, deps)).ready)
    if a.gpu_operator.enabled:
        labels = monitor_labels(a.monitoring)
        operator_after = deps + ([monitoring.release] if monitoring is not None else [])
        ready.append(GpuOperator("gpu-operator", GpuOperatorArgs(a, cfg.guest, labels, provider, operator_after)).ready)
    converged: list[pulumi.Resource] = list(ready)
    if monitoring is not None:
        converged.append(monitoring.release)
    if monitoring is not None and (a.device_plugin.enabled or a.gpu_operator.enabled):
        expected = {vm.name: len(vm.gpus) for vm in cfg.vms if vm.gpus}
        drift: tuple[dict, ...] = ()
        if a.monitoring.drift_check.enabled and cfg.guest is not None:
            # the optional drift check (render/drift_check.py): its DaemonSet and PodMonitor, and its alert in the GPU rules
            fm = sorted({fabric_packages(cfg.guest.os.family, cfg.guest.nvidia.driver_version,
                                         nvlink_generation=nvlink_generation([g.model for g in vm.gpus])).probe
                         for vm in cfg.vms if vm.nvswitches})
            drift = tuple(drift_check_objects(a, monitoring.namespace, monitoring.labels, cfg.guest.os.family, " ".join(fm) or None,
                                              cfg.kubernetes.version))
        dcgm = DcgmServiceMonitor("dcgm", DcgmServiceMonitorArgs(
            "operator" if a.gpu_operator.enabled else "standalone", a, monitoring, expected, runtime_class, provider, deps,
            tuple(vm.name for vm in cfg.vms if vm.nvswitches), drift, (drift_alert_group(),) if drift else ()))
        converged.append(dcgm.objects)
    if a.gpu_quotas:
        GpuQuotas("gpu-quotas", a.gpu_quotas, provider, after)
    smoke = a.smoke_test and bool(ready)
    if smoke:
        converged.append(GpuSmokeTest("gpu-smoke-test", GpuSmokeTestArgs(a, runtime_class, gpu_resource(cfg), provider, ready)).objects)
    pulumi.export("expectedAllocatable", expected_allocatable(cfg))
    if gate_connection is not None and ready and expected_allocatable(cfg):
        phase = readiness_phase(expected_allocatable(cfg), gpu_resource(cfg), plugin_logs_command(cfg),
                                (SMOKE_NAMESPACE, SMOKE_JOB) if smoke else None, kubeconfig_on_stdin=k.mode != "init")
        gate = ReadinessGate("readiness", ReadinessGateArgs(phase, gate_connection, converged,
                                                            kubeconfig if k.mode != "init" else None))
        pulumi.export("readinessGates", gate_plan(cfg, smoke))
        pulumi.export("readiness", gate.report)
        build_burn_in(cfg, runtime_class, gate_connection, gate.command, kubeconfig if k.mode != "init" else None)


def build_burn_in(cfg, runtime_class: str | None, connection: GuestConnection, readiness: pulumi.Resource,
                  kubeconfig: pulumi.Output[str] | None) -> None:
    """Issue 27: the first deploy's burn-in, after the readiness gate, one command per GPU node (render/burnin_gate.py)."""
    plans = node_plans(cfg)
    pulumi.export("burnInPlan", plan_summary(cfg))
    if not plans:
        return
    resource = gpu_resource(cfg)
    phases = {name: burnin_phase(p, cfg, "deploy", runtime_class, resource, kubeconfig_on_stdin=cfg.kubernetes.mode != "init")
              for name, p in plans.items()}
    gate = BurnInGate("burn-in", BurnInGateArgs(phases, connection, [readiness], kubeconfig))
    fraction = cfg.burn_in.min_busbw_fraction
    pulumi.export("burnIn", {name: gate.stdout[name].apply(lambda out, p=plans[name]: parse_gate_output(out, p, fraction))
                             for name in sorted(plans)})
