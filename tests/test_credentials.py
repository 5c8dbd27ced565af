"""Issue 29 part 1: credentials never hide in plain values.

No URL-valued key takes user:password@ (one validator, config/types.py url_type); proxy and
mirror credentials are secrets of their own, fed on stdin to phase credentials, which writes them
only to root-only files that apt, dnf, curl and containerd read (scripts/guest/credentials.sh).
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest
import yaml

from render.guest_scripts import render_script
from config import models as config_module
from config.errors import ConfigError
from stacks.load import parse_stack_config
from tests.conftest import ROOT, stack_file
from tests.support.guest_sandbox import GuestSandbox
from render.guest_scripts import guest_phases
from tests.test_guest_scripts import _phase

SECRETS = {"sshPrivateKey", "grafanaAdminPassword", "joinToken", "kubeconfig", "proxyPassword", "repositoryPassword"}
PROXY_PASSWORD = "pr0xy:p@ss/w%rd"
REPO_PASSWORD = "m1rror-S3cret"


def phases_for(raw: dict):
    cfg, _ = parse_stack_config(raw, SECRETS if raw["guest"].get("repositoryUsername") else SECRETS - {"proxyPassword", "repositoryPassword"})
    return guest_phases(cfg.vms[0], cfg.guest, cfg.kubernetes, "init")


def creds_config(family: str = "ubuntu") -> dict:
    raw = stack_file("dev")
    if family == "rhel":
        raw["guest"]["os"] = {"family": "rhel", "version": "9"}
    raw["guest"]["proxy"] = {"http": "http://proxy.lab.local:3128", "username": "svc-gpu"}
    raw["guest"]["repositoryUsername"] = "robot"
    raw["guest"]["repositories"] = {"nvidiaContainerToolkit": "https://mirror.lab.local/libnvidia-container"}
    raw["guest"]["containerRuntime"] = {"dockerRepository": "https://mirror.lab.local/docker/linux"}
    raw["kubernetes"]["packageRepository"] = "http://pkgs.lab.local:8080/k8s/v1.32"
    return raw


def _validators(annotation, metadata) -> set[str]:
    """Qualified names of the AfterValidators of a field, through Optional[...] and Annotated[...]."""
    names = {getattr(m.func, "__qualname__", "") for m in metadata if hasattr(m, "func")}
    for arg in typing.get_args(annotation):
        names |= {getattr(m.func, "__qualname__", "") for m in getattr(arg, "__metadata__", ()) if hasattr(m, "func")}
    return names


URL_NAMED = ("url", "uri", "repository", "endpoint", "http", "source", "ovf")
NOT_URLS = {("RegistryMirror", "registry"), ("VsphereTemplate", "ovf_network"), ("JoinTarget", "control_plane_endpoint")}
"""A registry host and host:port (their patterns admit no @), a vSphere network name: not URLs."""


def test_every_url_field_uses_the_one_validator():
    """Every config field that holds a URL gets the userinfo rule from url_type (or, for the two
    host-style keys, from credentials_problem itself): a URL field added later without it fails here."""
    checked = []
    models, todo = [], list(config_module.Model.__subclasses__())  # every config model, whichever config/ module holds it
    while todo:
        model = todo.pop(0)
        models.append(model)
        todo += model.__subclasses__()
    assert {"Host", "VsphereHost", "VsphereTemplate", "KubevirtRootDisk", "StackConfig"} <= {m.__name__ for m in models}
    for model in models:
        for name, info in model.model_fields.items():
            if not any(word in name for word in URL_NAMED) or (model.__name__, name) in NOT_URLS or name.endswith("username"):
                continue
            if name in ("repositories", "package_repository_key") or info.annotation in (bool, int):
                continue
            found = _validators(info.annotation, info.metadata)
            assert found & {"url_type.<locals>.check", "_libvirt_uri", "_vcenter_endpoint"}, f"{model.__name__}.{name}: {found}"
            checked.append(f"{model.__name__}.{name}")
    assert len(checked) >= 11, checked


@pytest.mark.parametrize(("path", "value", "secret"), [
    ("guest.proxy.http", "http://svc:pw@proxy.lab.local:3128", "proxyPassword"),
    ("guest.proxy.https", "http://svc@proxy.lab.local:3128", "proxyPassword"),
    ("guest.registryMirrors[0].endpoint", "https://robot:pw@harbor.lab.local/v2/nvcr", "registryPassword"),
    ("guest.repositories.cuda", "https://robot:pw@mirror.lab.local/cuda/repos", "repositoryPassword"),
    ("guest.repositories.nvidiaContainerToolkit", "https://robot:pw@mirror.lab.local/nct", "repositoryPassword"),
    ("guest.containerRuntime.dockerRepository", "https://robot:pw@mirror.lab.local/docker/linux", "repositoryPassword"),
    ("kubernetes.packageRepository", "https://robot:pw@mirror.lab.local/k8s", "repositoryPassword"),
    ("guest.nvidia.runfileUrl", "https://robot:pw@mirror.lab.local/NVIDIA-Linux-x86_64-570.172.08.run", "repositoryPassword"),
    ("hosts[0].libvirtUri", "qemu+ssh://root:pw@lab-gpu-1.lab.local/system", "hypervisorSshPrivateKey"),
    ("hosts[0].baseImage.source", "https://u:pw@cloud-images.lab.local/noble.img", "serve it where none are needed"),
])
def test_userinfo_is_refused_at_the_key_naming_the_secret_and_never_echoed(path, value, secret):
    from tests.test_bad_input import set_path

    doc = stack_file("dev")
    if path.startswith("guest.registryMirrors"):
        doc["guest"]["registryMirrors"] = [{"registry": "nvcr.io", "endpoint": "https://harbor.lab.local/v2/nvcr"}]
    set_path(doc, path, value)
    with pytest.raises(ConfigError) as e:
        parse_stack_config(doc, SECRETS, "dev")
    [issue] = e.value.issues
    assert issue.path == path
    assert secret in issue.message and "pw" not in issue.message.replace("password", "")
    assert "***@" in issue.message


def test_libvirt_uri_keeps_its_user():
    parse_stack_config(stack_file("dev"), {"sshPrivateKey", "grafanaAdminPassword"}, "dev")  # qemu+ssh://root@...


@pytest.mark.parametrize(("user_key", "setup", "secret"), [
    ("guest.proxy", {"http": "http://proxy.lab.local:3128", "username": "svc"}, "proxyPassword"),
    ("guest.repositoryUsername", "robot", "repositoryPassword"),
])
def test_a_user_needs_its_password_secret_and_the_reverse(user_key, setup, secret):
    from tests.test_bad_input import set_path

    doc = stack_file("dev")
    doc["kubernetes"]["packageRepository"] = "https://mirror.lab.local/k8s"
    set_path(doc, user_key, setup)
    base = {"sshPrivateKey", "grafanaAdminPassword"}
    with pytest.raises(ConfigError) as e:
        parse_stack_config(doc, base, "dev")
    assert [i.path for i in e.value.issues] == [secret]
    parse_stack_config(doc, base | {secret}, "dev")
    with pytest.raises(ConfigError) as e:
        parse_stack_config(stack_file("dev"), base | {secret}, "dev")
    assert [i.path for i in e.value.issues] == [secret]


def _stdin() -> str:
    return f"{PROXY_PASSWORD}\n{REPO_PASSWORD}\n"


@pytest.mark.parametrize("family", ["ubuntu", "rhel"])
def test_credentials_reach_only_root_only_files(tmp_path, family):
    phases = phases_for(creds_config(family))
    phase = _phase(phases, "credentials")
    assert phase.stdin_secret == "guestCredentials"
    for p in phases:
        script = render_script(p.name, p.params)
        assert PROXY_PASSWORD not in script and REPO_PASSWORD not in script
    sb = GuestSandbox(tmp_path, family)
    result = sb.run(phase, stdin=_stdin())
    assert result.returncode == 0, result.stderr
    assert PROXY_PASSWORD not in result.stdout + result.stderr and REPO_PASSWORD not in result.stdout + result.stderr
    env = sb.root / "etc/gpu-stack/proxy.env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    # user:password percent-encoded (RFC 3986), as curl and Go's net/url decode it
    assert env.read_text() == ("HTTP_PROXY=http://svc-gpu:pr0xy%3Ap%40ss%2Fw%25rd@proxy.lab.local:3128\n"
                               "HTTPS_PROXY=http://svc-gpu:pr0xy%3Ap%40ss%2Fw%25rd@proxy.lab.local:3128\n")
    netrc = sb.root / "etc/gpu-stack/netrc"
    assert oct(netrc.stat().st_mode & 0o777) == "0o600"
    assert netrc.read_text() == (f"machine mirror.lab.local login robot password {REPO_PASSWORD}\n"
                                 f"machine pkgs.lab.local login robot password {REPO_PASSWORD}\n")
    if family == "ubuntu":
        auth = sb.root / "etc/apt/auth.conf.d/gpu-stack.conf"
        assert oct(auth.stat().st_mode & 0o777) == "0o600"
        assert auth.read_text().splitlines() == [
            # apt_auth.conf(5), apt 2.6.1: "If protocol is not specified, the entry only matches https and tor+https":
            # an http:// proxy's line must name its scheme, or apt never sends the password (407 on the first update)
            f"machine http://proxy.lab.local:3128 login svc-gpu password {PROXY_PASSWORD}",
            f"machine https://mirror.lab.local login robot password {REPO_PASSWORD}",
            f"machine http://pkgs.lab.local:8080 login robot password {REPO_PASSWORD}",
        ]
    else:
        conf = sb.root / "etc/dnf/dnf.conf"
        assert oct(conf.stat().st_mode & 0o777) == "0o600"
        assert f"proxy_username=svc-gpu\nproxy_password={PROXY_PASSWORD}\n" in conf.read_text()
    tree = sb.tree()
    sb.clear_calls()
    assert sb.run(phase, stdin=_stdin()).returncode == 0
    assert sb.tree() == tree and sb.mutating() == []

    # the later phases: curl through the proxy with its credentials, the mirrors' with netrc, apt's proxy without
    for name in ("preflight", "os-prep", "container-runtime", "kubernetes"):
        p = _phase(phases, name)
        r = sb.run(p, stdin="")
        assert r.returncode == 0, f"{name}: {r.stderr}"
        assert PROXY_PASSWORD not in r.stdout + r.stderr and REPO_PASSWORD not in r.stdout + r.stderr
    fetches = sb.state["fetches"]
    assert fetches and all(f["proxy"] == "http://svc-gpu:pr0xy%3Ap%40ss%2Fw%25rd@proxy.lab.local:3128" for f in fetches)
    curls = [c["argv"] for c in sb.calls() if c["cmd"] == "curl"]
    assert curls and all("--netrc-file" in argv and REPO_PASSWORD not in " ".join(argv) for argv in curls)
    dropin = (sb.root / "etc/systemd/system/containerd.service.d/http-proxy.conf").read_text()
    assert "EnvironmentFile=/etc/gpu-stack/proxy.env" in dropin and "svc-gpu" not in dropin
    if family == "ubuntu":
        apt_proxy = (sb.root / "etc/apt/apt.conf.d/95gpu-stack-proxy").read_text()
        assert "svc-gpu" not in apt_proxy and 'Acquire::http::Proxy "http://proxy.lab.local:3128";' in apt_proxy
    else:
        for repo, base in (("kubernetes.repo", "http://pkgs.lab.local:8080"), ("docker-ce.repo", "https://mirror.lab.local"),
                           ("nvidia-container-toolkit.repo", "https://mirror.lab.local")):
            path = sb.root / "etc/yum.repos.d" / repo
            text = path.read_text()
            assert f"username=robot\npassword={REPO_PASSWORD}\n" in text and base in text, repo
            assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_dropping_the_users_removes_the_files(tmp_path):
    sb = GuestSandbox(tmp_path, "rhel")
    phases = phases_for(creds_config("rhel"))
    assert sb.run(_phase(phases, "credentials"), stdin=_stdin()).returncode == 0
    plain = stack_file("dev")
    plain["guest"]["os"] = {"family": "rhel", "version": "9"}
    later = phases_for(plain)
    assert "credentials" not in [p.name for p in later]
    assert sb.run(_phase(later, "os-prep")).returncode == 0
    assert not (sb.root / "etc/gpu-stack/proxy.env").exists() and not (sb.root / "etc/gpu-stack/netrc").exists()
    conf = sb.root / "etc/dnf/dnf.conf"
    assert "proxy_password" not in conf.read_text() and oct(conf.stat().st_mode & 0o777) == "0o644"


def test_a_plan_with_proxy_and_mirror_credentials_holds_none_of_them(tmp_path):
    """`make plan` on a stack whose proxy and mirrors take credentials, given as secrets: no file of the plan
    (resources.json, the scripts, rollout.json) holds the passwords; the credentials command's stdin is a secret."""
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    raw = creds_config()
    doc["config"]["gpu-stack:guest"] = raw["guest"]
    doc["config"]["gpu-stack:kubernetes"] = raw["kubernetes"]
    doc["encryptionsalt"] = "v1:Zm9vYmFy:v1:c2FsdHNhbHQ=:ZmFrZQ=="
    doc["config"]["gpu-stack:proxyPassword"] = {"secure": "v1:AAAAciphertext-proxy"}
    doc["config"]["gpu-stack:repositoryPassword"] = {"secure": "v1:AAAAciphertext-repo"}
    (tmp_path / "Pulumi.creds.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "tools.plan", "creds", "--out", str(tmp_path / "plan"), "--stack-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "plan" / "creds"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert out / "resources.json" in files
    for path in files:
        text = path.read_text()
        for needle in ("ciphertext", "plan-placeholder-proxyPassword", "plan-placeholder-repositoryPassword"):
            assert needle not in text, f"{needle} in {path.relative_to(out)}"
    assert "plan-placeholder" not in proc.stdout + proc.stderr
    resources = json.loads((out / "resources.json").read_text())
    cred = next(r for r in resources if r["name"] == "gpu-dev-0-guest-credentials")
    assert cred["inputs"]["stdin"] == "[secret]"
