"""A real Kubernetes control plane on 127.0.0.1, from the binaries `make engine` builds (engine/engine.toml).

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK (nodes without a kubelet), each
started here, each stopped by the pid this module recorded: nothing else on the machine is touched.
Certificates are throwaway (a CA, the API server's serving certificate, an admin client certificate in
system:masters, the service-account key), made with `cryptography` in a temporary directory.

KWOK v0.8.0 ships no default stages; they are read at run time from the KWOK module in the Go module
cache (kustomize/stage/node/fast, node/heartbeat-with-lease and pod/fast), the module the binary was
built from, so no upstream data is committed.

Used by tests/k8s/ (the objects gpu-stack applies, against the real API server and scheduler).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from tools.engine import engine_bin, manifest

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
KWOK_STAGES = ("node/fast", "node/heartbeat-with-lease", "pod/fast")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
"""KWOK manages only the nodes with this annotation (--manage-nodes-with-annotation-selector)."""
SERVICE_CIDR = "10.96.0.0/16"
READY_TIMEOUT_S = 120


def binaries() -> tuple[Path | None, list[str]]:
    """(the engine bin dir, the control-plane binaries missing from it)."""
    bin_dir = engine_bin()
    if bin_dir is None:
        return None, list(BINARIES)
    return bin_dir, [b for b in BINARIES if not (bin_dir / b).is_file()]


def kwok_version() -> str:
    return next(b["version"] for b in manifest()["binary"] if b["name"] == "kwok")


def kwok_module_dir() -> Path | None:
    """The KWOK module the binary was built from, in the Go module cache."""
    cache = os.environ.get("GOMODCACHE")
    if not cache and shutil.which("go"):
        cache = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=False).stdout.strip()
    cache = cache or str(Path.home() / "go" / "pkg" / "mod")
    path = Path(cache) / f"sigs.k8s.io/kwok@v{kwok_version()}"
    return path if path.is_dir() else None


def kwok_stages(module: Path) -> str:
    """The Stage objects of KWOK_STAGES, as one multi-document YAML for `kwok -c`."""
    docs = []
    for stage in KWOK_STAGES:
        kustomization = yaml.safe_load((module / "kustomize/stage" / stage / "kustomization.yaml").read_text())
        for name in kustomization["resources"]:
            docs.append((module / "kustomize/stage" / stage / name).read_text().strip())
    return "\n---\n".join(docs) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- throwaway certificates ---------------------------------------------------------------------


def _certs(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("gpu-stack-test-ca")).issuer_name(name("gpu-stack-test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, org: str | None, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn, org)).issuer_name(ca.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default"),
                x509.DNSName("kubernetes.default.svc"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(service_ip)]), critical=False)
        return b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key_pem(key)

    (d / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(key_pem(ca_key))
    for stem, cn, org, server in (("apiserver", "kube-apiserver", None, True), ("admin", "gpu-stack-test-admin", "system:masters", False)):
        crt, key = leaf(cn, org, server)
        (d / f"{stem}.crt").write_bytes(crt)
        (d / f"{stem}.key").write_bytes(key)
    sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "sa.key").write_bytes(key_pem(sa))
    (d / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for p in d.iterdir():
        p.chmod(0o600)


# --- the control plane --------------------------------------------------------------------------


class ControlPlaneError(RuntimeError):
    pass


@dataclass
class ControlPlane:
    bin_dir: Path
    work: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    port: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.work / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- lifecycle

    def _spawn(self, name: str, args: list[str]) -> None:
        with (self.work / f"{name}.log").open("wb") as log:  # the child keeps its own descriptor
            self.procs[name] = subprocess.Popen([str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=self.work, start_new_session=True)

    def log(self, name: str, tail: int = 30) -> str:
        path = self.work / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-tail:]) if path.exists() else ""

    def _wait(self, what: str, ok, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise ControlPlaneError(f"{name} exited with {p.returncode} while waiting for {what}:\n{self.log(name)}")
            try:
                if ok():
                    return
            except (OSError, subprocess.SubprocessError, ValueError):
                pass
            time.sleep(0.25)
        raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")

    def start(self) -> "ControlPlane":
        t0 = time.monotonic()
        d = self.work
        _certs(d)
        etcd_client, etcd_peer, self.port = free_port(), free_port(), free_port()
        self._spawn("etcd", [
            "--name=gpu-stack-test", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}", f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}", f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=gpu-stack-test=http://127.0.0.1:{etcd_peer}", "--log-level=warn",
            "--quota-backend-bytes=1073741824",
        ])
        self._wait("etcd /health", lambda: b'"health":"true"' in _http_get(f"http://127.0.0.1:{etcd_client}/health"))
        self.timings["etcd"] = time.monotonic() - t0
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--authorization-mode=Node,RBAC",
            # kubeadm's own addition to the default admission plugins (ResourceQuota, RuntimeClass,
            # NamespaceLifecycle, ServiceAccount, ... are on by default)
            "--enable-admission-plugins=NodeRestriction",
        ])
        self._write_kubeconfig()
        self._wait("kube-apiserver /readyz", lambda: self.kubectl("get", "--raw=/readyz", check=False).returncode == 0)
        self.timings["kube-apiserver"] = time.monotonic() - t0
        common = [f"--kubeconfig={self.kubeconfig}", f"--authentication-kubeconfig={self.kubeconfig}",
                  f"--authorization-kubeconfig={self.kubeconfig}", "--bind-address=127.0.0.1"]
        self._spawn("kube-controller-manager", [
            *common, f"--secure-port={free_port()}", f"--root-ca-file={d / 'ca.crt'}",
            f"--service-account-private-key-file={d / 'sa.key'}", f"--cluster-signing-cert-file={d / 'ca.crt'}",
            f"--cluster-signing-key-file={d / 'ca.key'}", "--use-service-account-credentials=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ])
        self._spawn("kube-scheduler", [*common, f"--secure-port={free_port()}"])
        module = kwok_module_dir()
        if module is None:
            raise ControlPlaneError(f"the KWOK module sigs.k8s.io/kwok@v{kwok_version()} is not in the Go module cache; run `make engine`")
        (d / "kwok.yaml").write_text(kwok_stages(module))
        self._spawn("kwok", [
            f"--kubeconfig={self.kubeconfig}", "-c", str(d / "kwok.yaml"),
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake", "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        ])
        # leader election is on, as kubeadm runs them: holding the Lease means the component is working
        for lease in ("kube-controller-manager", "kube-scheduler"):
            self._wait(f"the {lease} Lease", lambda lease=lease: self.kubectl(
                "-n", "kube-system", "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}", check=False).stdout.strip() != "")
            self.timings[lease] = time.monotonic() - t0
        self._wait("ServiceAccount default/default (the controller manager's serviceaccount controller)",
                   lambda: self.kubectl("-n", "default", "get", "serviceaccount", "default", check=False).returncode == 0)
        self.timings["ready"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop exactly the processes this control plane started, by pid, in reverse order."""
        for name, p in reversed(list(self.procs.items())):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=15)

    def rss_mb(self) -> dict[str, int]:
        out = {}
        for name, p in self.procs.items():
            try:
                status = Path(f"/proc/{p.pid}/status").read_text()
            except OSError:
                continue
            kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
            out[name] = kb // 1024
        return out

    # -- clients

    def _write_kubeconfig(self) -> None:
        d = self.work
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.server, "certificate-authority": str(d / "ca.crt")}}],
            "users": [{"name": "admin", "user": {"client-certificate": str(d / "admin.crt"), "client-key": str(d / "admin.key")}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        }))
        self.kubeconfig.chmod(0o600)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                              capture_output=True, text=True, timeout=timeout, cwd=self.work,
                              env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.work)})
        if check and done.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def apply(self, obj: dict[str, Any], manager: str = "gpu-stack") -> subprocess.CompletedProcess[str]:
        """Server-side apply of one object, as pulumi-kubernetes does; the result (refusals included) unchecked."""
        return self.kubectl("apply", "--server-side", f"--field-manager={manager}", "--force-conflicts", "-f", "-",
                            input=json.dumps(obj), check=False)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def create_node(self, name: str, labels: dict[str, str], taints: Iterable[dict[str, str]], extended: dict[str, int]) -> None:
        """A KWOK node: the labels, taints and extended resources (nvidia.com/gpu: the device plugin's part) given."""
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": dict(labels), "annotations": {KWOK_ANNOTATION: "fake"}},
                "spec": {"taints": [{k: v for k, v in t.items() if v != "" or k != "value"} for t in taints]}}
        done = self.apply(node, manager="kwok-test")
        if done.returncode != 0:
            raise ControlPlaneError(f"node {name}: {done.stderr.strip()}")
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", **{k: str(v) for k, v in extended.items()}}
        self.kubectl("patch", "node", name, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"capacity": resources, "allocatable": resources}}))

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """A CRD is served once its Established condition is True (kubectl wait fails while it has no conditions yet)."""
        def established() -> bool:
            conditions = self.get("crd", crd).get("status", {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
        self._wait(f"CRD {crd} Established", established, timeout)

    def wait_nodes_ready(self, names: Iterable[str], timeout: float = 60) -> None:
        names = set(names)

        def ready() -> bool:
            nodes = self.get("nodes")["items"]
            up = {n["metadata"]["name"] for n in nodes
                  if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
                  and not any(t["key"] == "node.kubernetes.io/not-ready" for t in n.get("spec", {}).get("taints", []) or [])}
            return names <= up
        self._wait(f"nodes {', '.join(sorted(names))} Ready (KWOK)", ready, timeout)


def _http_get(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback, our own etcd)
        return r.read()
