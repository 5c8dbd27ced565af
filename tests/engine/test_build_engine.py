"""scripts/build-engine.sh: the cache lives outside the checkout and is keyed by engine/. No Go build."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tools.engine import ROOT


def _copy(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "build-engine.sh", repo / "scripts")
    shutil.copytree(ROOT / "engine", repo / "engine")
    return repo


def _run(repo: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(repo / "scripts" / "build-engine.sh"), *args], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "HOME": str(cache.parent), "GPU_STACK_ENGINE_CACHE": str(cache)})


def test_cache_is_outside_the_checkout_keyed_by_engine_and_reused(tmp_path):
    repo, cache = _copy(tmp_path), tmp_path / "cache"
    bin_dir = Path(_run(repo, cache, "--print").stdout.strip())
    assert bin_dir.parent.parent == cache and bin_dir.name == "bin"
    assert not bin_dir.is_relative_to(repo)
    assert _run(repo, cache, "--check").returncode == 1, "nothing built yet"

    bin_dir.mkdir(parents=True)
    (bin_dir / ".complete").touch()
    assert _run(repo, cache, "--check").stdout.strip() == str(bin_dir)
    reused = _run(repo, cache)  # a complete cache entry is reused, not rebuilt
    assert reused.returncode == 0 and reused.stdout.strip() == str(bin_dir) and "cached" in reused.stderr

    with (repo / "engine" / "cli" / "go.mod").open("a") as f:
        f.write("// another pin\n")
    assert Path(_run(repo, cache, "--print").stdout.strip()) != bin_dir, "a changed go.mod builds into a new dir"


def test_default_cache_is_under_xdg_cache_home(tmp_path):
    repo = _copy(tmp_path)
    out = subprocess.run(["bash", str(repo / "scripts" / "build-engine.sh"), "--print"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert Path(out.stdout.strip()).parent.parent == tmp_path / "xdg" / "gpu-stack" / "engine"


def test_our_own_main_packages_are_part_of_the_cache_key(tmp_path):
    """engine/etcd/main.go is the etcd binary's whole source of our own: changing it must build into a new dir."""
    repo, cache = _copy(tmp_path), tmp_path / "cache"
    before = _run(repo, cache, "--print").stdout.strip()
    main = repo / "engine" / "etcd" / "main.go"
    main.parent.mkdir(parents=True, exist_ok=True)
    with main.open("a") as f:
        f.write("// changed\n")
    assert _run(repo, cache, "--print").stdout.strip() != before
