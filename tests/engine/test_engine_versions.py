"""engine/ pins the versions that the installed Python packages ask for, or says why not.

The Python SDK names the CLI release it belongs to (its own version) and each provider package
names its plugin in pulumi-plugin.json; the engine's manifest (engine/engine.toml) and the Go
wrapper modules (engine/<dir>/go.mod) must agree with them. Needs no Go and no engine.
"""

from __future__ import annotations

import json
import re
from importlib import metadata, resources
from pathlib import Path

import pytest
import yaml

from tools.engine import MANIFEST, ROOT, manifest

ENTRIES = [(kind, e) for kind in ("binary", "blocked") for e in manifest().get(kind, [])]


def wanted(python_package: str) -> str:
    """What the installed package asks for: the SDK's own version, or its plugin's version."""
    if python_package == "pulumi":
        return metadata.version("pulumi")
    plugin = json.loads(resources.files(python_package).joinpath("pulumi-plugin.json").read_text())
    return plugin["version"]


def gomod_requires(path: Path) -> dict[str, str]:
    text = path.read_text()
    return dict(re.findall(r"^\s*(?:require\s+)?(\S+)\s+(v\S+)(?:\s+//.*)?$", text, flags=re.M))


def stack_kubernetes_versions() -> dict[str, str]:
    """`gpu-stack:kubernetes.version` of every Pulumi.<stack>.yaml on a supported release.

    A stack that joins a cluster past its end of support says so (`pastEndOfSupport`: esxi joins a
    user's 1.23.17 cluster); the control plane is built at the release the other stacks pin, and the
    proxy serves no 1.23 (`go list -m -versions k8s.io/kubernetes`: nothing between v1.13.0 and v1.29.6).
    """
    versions = {}
    for path in sorted(ROOT.glob("Pulumi.*.yaml")):
        config = yaml.safe_load(path.read_text()).get("config", {})
        kubernetes = config.get("gpu-stack:kubernetes") or {}
        version = kubernetes.get("version")
        if version and not kubernetes.get("pastEndOfSupport"):
            versions[path.name] = str(version)
    return versions


@pytest.mark.parametrize(("kind", "entry"), ENTRIES, ids=[e["name"] for _, e in ENTRIES])
def test_manifest_wants_what_the_python_package_asks_for(kind, entry):
    if "python" in entry:
        assert entry["wants"] == wanted(entry["python"]), f"{MANIFEST.name}: {entry['name']}"
    elif entry.get("stacks") == "kubernetes.version":
        versions = stack_kubernetes_versions()
        assert versions, "the stacks pin a Kubernetes release"
        assert set(versions.values()) == {entry["wants"]}, f"{MANIFEST.name}: {entry['name']} wants {entry['wants']}, the stacks pin {versions}"
    else:
        assert entry.get("wants_source", "").strip(), f"{MANIFEST.name}: {entry['name']} names no python package and no stacks key: say where `wants` comes from"


def test_kubernetes_wrappers_replace_every_staging_module_at_the_matching_version():
    """k8s.io/kubernetes' replaces to ./staging do not apply outside it: each wrapper must replace them all at v0.X.Y."""
    for entry in (e for e in manifest()["binary"] if e["module"] == "k8s.io/kubernetes"):
        gomod = (ROOT / "engine" / entry["dir"] / "go.mod").read_text()
        replaces = re.findall(r"^\s*(k8s\.io/\S+) => (k8s\.io/\S+) (v\S+)$", gomod, flags=re.M)
        assert len(replaces) >= 30, f"engine/{entry['dir']}/go.mod replaces the staging modules"
        staging = "v0." + entry["version"].split(".", 1)[1]
        for old, new, version in replaces:
            assert (old, version) == (new, staging), f"engine/{entry['dir']}/go.mod: {old} => {new} {version}, not {staging}"
        assert re.search(r"^\s*k8s\.io/kubernetes v" + re.escape(entry["version"]) + r"\b", gomod, flags=re.M)


def test_every_provider_package_in_requirements_has_an_entry():
    pins = re.findall(r"^(pulumi-[a-z0-9-]+)==(\S+)", (ROOT / "requirements.txt").read_text(), flags=re.M)
    assert pins, "requirements.txt pins the provider packages"
    names = {e["name"] for _, e in ENTRIES}
    for package, version in pins:
        plugin = json.loads(resources.files(package.replace("-", "_")).joinpath("pulumi-plugin.json").read_text())
        assert plugin["version"] == version, f"installed {package} is not the pinned {version}"
        assert f"pulumi-resource-{plugin['name']}" in names, f"{package} {version}: no entry in {MANIFEST.name}"


@pytest.mark.parametrize("entry", manifest()["binary"], ids=[e["name"] for e in manifest()["binary"]])
def test_go_mod_pins_the_manifest_version(entry):
    gomod = ROOT / "engine" / entry["dir"] / "go.mod"
    requires = gomod_requires(gomod)
    assert requires.get(entry["module"]) == f"v{entry['version']}", f"{gomod.relative_to(ROOT)} pins {entry['module']}"
    if "main" in entry:  # our own main package, calling the module (etcd's server module has no command)
        assert entry["package"] == "."
        main = (gomod.parent / entry["main"]).read_text()
        assert re.search(rf'^package main$', main, flags=re.M) and f'"{entry["module"]}/' in main, f"{entry['main']} imports {entry['module']}"
    else:
        assert entry["package"].startswith(entry["module"] + "/") or entry["package"] == entry["module"]
        assert re.search(rf"^tool {re.escape(entry['package'])}$", gomod.read_text(), flags=re.M), "a `tool` directive names the binary's package"
    if entry["version"] != entry["wants"]:
        assert entry.get("deviation", "").strip(), f"{entry['name']}: pinned {entry['version']} but the Python package wants {entry['wants']}; say why in `deviation`"
    if "stamp" in entry:  # a pseudo-version pin of a release commit: upstream's build stamps the release
        assert entry["version"].startswith("0.0.0-") or re.fullmatch(r"\d+\.0\.0-\d{14}-[0-9a-f]{12}", entry["version"]), entry["version"]
        assert f"={entry['stamp']}" in entry.get("ldflags", ""), "the version stamped into the binary is `stamp`"
    elif "ldflags" in entry:
        assert f"=v{entry['version']}" in entry["ldflags"], "the version stamped into the binary is the pinned one"
    if "generate" in entry:
        assert re.fullmatch(r"[a-z_]+\.go", entry["generate"]), "a generator program in the package's dir"


@pytest.mark.parametrize("entry", manifest().get("blocked", []), ids=[e["name"] for e in manifest().get("blocked", [])])
def test_a_blocked_binary_says_what_the_registry_answered(entry):
    assert re.search(r"\b(403|404)\b", entry["error"]), entry["name"]
    assert entry["module"].startswith("github.com/")
