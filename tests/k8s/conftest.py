"""A real control plane for the objects gpu-stack applies (tests/support/control_plane.py).

`control_plane`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK from `make engine`,
fresh for each test on 127.0.0.1 with throwaway certificates, stopped afterwards by the pids it started.
Without the binaries a test skips on a workstation (saying how to build them) and FAILS with CI=true.
"""

from __future__ import annotations

import faulthandler
import shutil
from pathlib import Path

import pytest

from tests.conftest import missing_validator
from tests.support.control_plane import ControlPlane, binaries, kwok_module_dir, kwok_version


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.k8s)


WATCHDOG_S = 600


@pytest.fixture(autouse=True)
def _watchdog():
    """A hung control plane must not hold CI for its 90 minutes: dump every thread's stack and exit."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def control_plane_bin() -> Path:
    bin_dir, missing = binaries()
    if missing:
        how = "install Go (1.26.6 or newer) and run `make engine`" if shutil.which("go") is None else "run `make engine`"
        missing_validator(f"the control plane is not built ({', '.join(missing)} missing): {how} (scripts/build-engine.sh builds it from engine/)")
    if kwok_module_dir() is None:
        missing_validator(f"KWOK's stages come from the module sigs.k8s.io/kwok@v{kwok_version()} in the Go module cache: run `make engine`")
    return bin_dir


@pytest.fixture
def control_plane(control_plane_bin: Path, tmp_path: Path):
    cp = ControlPlane(control_plane_bin, tmp_path / "control-plane")
    cp.work.mkdir()
    try:
        yield cp.start()
    finally:
        cp.stop()
