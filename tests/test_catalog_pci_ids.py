"""The catalog's NVIDIA device IDs against the installed PCI ID database (validator test).

pci.ids is the PCI ID Repository as a distribution packages it: Debian's `pci.ids` package
(/usr/share/misc/pci.ids; .ci/run installs it), or `hwdata` (/usr/share/hwdata/pci.ids). Every
catalog ID the installed file knows must carry there the name config/catalog.PCI_ID_NAMES records
for it (the name the model is matched by); an ID newer than the installed file is not in it and is
left to the catalog's other sources. Skips on a workstation without the file, fails in CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.catalog import GPU_MODELS, NVSWITCH_MODELS, PCI_ID_NAMES
from tests.conftest import missing_validator

PCI_IDS_FILES = (Path("/usr/share/misc/pci.ids"), Path("/usr/share/hwdata/pci.ids"))
ALL_MODELS = {**GPU_MODELS, **NVSWITCH_MODELS}


def _nvidia_devices(text: str) -> dict[str, str]:
    """The vendor 10de block of pci.ids: device ID -> name (subsystem lines left out)."""
    devices: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if not line.startswith("\t"):
            inside = line.startswith("10de  ")
            continue
        if inside and not line.startswith("\t\t"):
            device, _, name = line[1:].partition("  ")
            devices[device] = name.strip()
    return devices


@pytest.fixture(scope="module")
def installed() -> tuple[Path, str, dict[str, str]]:
    path = next((p for p in PCI_IDS_FILES if p.exists()), None)
    if path is None:
        missing_validator("pci.ids is not installed (Debian: apt-get install pci.ids; .ci/run installs it)")
    text = path.read_text(encoding="utf-8", errors="replace")
    version = re.search(r"^#\s*Version:\s*(\S+)", text, re.M)
    return path, version.group(1) if version else "?", _nvidia_devices(text)


def _same_name(installed_name: str, recorded: str) -> bool:
    """Equal up to the space before `[` (pci.ids 2023.04.10 has `GH100[H100 SXM5 80GB]`); a bare chip name
    (`GH100`, an ID listed before the product was named) matches a recorded name on that chip."""
    def norm(n: str) -> str:
        return re.sub(r"\s*\[", " [", n).strip()
    return norm(installed_name) == norm(recorded) or ("[" not in installed_name and recorded.split(" [")[0] == installed_name.strip())


def catalog_ids() -> list[tuple[str, str]]:
    return [(name, pid.split(":")[1]) for name, m in ALL_MODELS.items() for pid in m.pci_ids]


def test_every_catalog_id_is_nvidia_lowercase_hex_and_named():
    for name, m in ALL_MODELS.items():
        for pid in m.pci_ids:
            assert re.fullmatch(r"10de:[0-9a-f]{4}", pid), (name, pid)
            assert pid.split(":")[1] in PCI_ID_NAMES, (name, pid)
    ids = [d for _, d in catalog_ids()]
    assert len(ids) == len(set(ids)), "one device ID on two models"


def test_every_catalog_id_has_its_recorded_name_in_the_installed_pci_ids(installed):
    """IDs newer than the installed file (its Version) are not in it: config/catalog.py gives their other sources."""
    path, version, devices = installed
    wrong = [f"{model}: 10de:{d} is {devices[d]!r} in {path} (Version {version}), the catalog says {PCI_ID_NAMES[d]!r}"
             for model, d in catalog_ids() if d in devices and not _same_name(devices[d], PCI_ID_NAMES[d])]
    assert not wrong, wrong


def test_p100_pcie_16gb_is_15f8_in_the_installed_pci_ids(installed):
    """Issue 22 item 8: a real `virsh nodedev-dumpxml` of a P100 PCIe 16GB says <product id='0x15f8'>; the catalog had no ID."""
    _, _, devices = installed
    assert GPU_MODELS["P100-PCIE-16GB"].pci_ids == ("10de:15f8",)
    assert devices["15f8"] == "GP100GL [Tesla P100 PCIe 16GB]"


def test_most_catalog_ids_are_checked_by_the_installed_file(installed):
    """The check above passes IDs the file lacks; make sure it is a real pci.ids that knows most of ours."""
    _, version, devices = installed
    known = [d for _, d in catalog_ids() if d in devices]
    assert len(known) >= len(catalog_ids()) * 2 // 3, (version, known)
