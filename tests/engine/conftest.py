"""The engine tests' fixtures: the real Pulumi CLI from `make engine`, and its plugins.

- `engine`: the bin dir of the engine built by scripts/build-engine.sh. Where it is missing the
  test skips on a workstation (saying how to build it) and FAILS with CI=true.
- `providers`: every provider plugin the program needs. A plugin that engine/engine.toml lists as
  [[blocked]] (its Go module is refused by the registry, the manifest records the answer) skips
  the test with that answer, in CI too: it cannot be built, and the manifest says so. A plugin
  that is neither built nor recorded as blocked is a broken engine build, and fails in CI.
"""

from __future__ import annotations

import faulthandler
import shutil
from pathlib import Path

import pytest

from tests.conftest import missing_validator
from tools.engine import engine_bin, manifest


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.engine)


WATCHDOG_S = 600


@pytest.fixture(autouse=True)
def _watchdog():
    """A hung engine run must not hold CI for its 90 minutes: dump every thread's stack and exit."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def engine() -> Path:
    bin_dir = engine_bin()
    if bin_dir is None:
        how = "install Go (1.26.6 or newer) and run `make engine`" if shutil.which("go") is None else "run `make engine`"
        missing_validator(f"the real engine is not built: {how} (scripts/build-engine.sh builds it from engine/)")
    return bin_dir


PROVIDERS = ("command", "tls", "libvirt", "kubernetes")


def require_plugins(engine: Path, packages) -> Path:
    """Skip when one of these provider plugins is recorded as [[blocked]] and not built; fail (CI) when one is neither."""
    blocked = {e["name"]: e for e in manifest().get("blocked", [])}
    for name in (f"pulumi-resource-{p}" for p in packages):
        if (engine / name).is_file():
            continue
        if name in blocked:
            entry = blocked[name]
            pytest.skip(f"{name} {entry['wants']} cannot be built here: {entry['module']}: {' '.join(entry['error'].split())}")
        missing_validator(f"{name} is missing from {engine} and engine/engine.toml does not record it as blocked")
    return engine


@pytest.fixture(scope="session")
def providers(engine: Path) -> Path:
    return require_plugins(engine, PROVIDERS)
