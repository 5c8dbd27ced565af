"""Fabric Manager, NSCQ and NVLink 5 packages by driver branch, repository and distribution.

The names changed at driver branch 580 in NVIDIA's CUDA repository, and
Ubuntu's own archive names them differently again, so an upgrade from 570 to
580 must ask for other package names. The table, per repository:

| repository | branch | Fabric Manager | NSCQ | pin |
|---|---|---|---|---|
| Ubuntu archive (Ubuntu guests: the driver is `nvidia-headless-<branch>-server`) | any | `nvidia-fabricmanager-<branch>` | `libnvidia-nscq-<branch>` | APT preferences `<version>-*` (driver.sh) |
| CUDA repository, Ubuntu | < 580 | `nvidia-fabricmanager-<branch>` | `libnvidia-nscq-<branch>` | `=<version>-1` |
| CUDA repository, Ubuntu | >= 580 | `nvidia-fabricmanager` | `libnvidia-nscq` | `=<version>-1` |
| CUDA repository, EL (EL guests: the driver is `nvidia-driver-<version>`) | < 580 | `nvidia-fabric-manager` | `libnvidia-nscq-<branch>` | `-<version>` + versionlock |
| CUDA repository, EL | >= 580 | `nvidia-fabricmanager` | `libnvidia-nscq` | `-<version>` + versionlock |

NVLink 5 (HGX B200/B300) also needs `nvlsm` (the NVLink subnet manager) and
`infiniband-diags`, unpinned as NVIDIA installs them. IMEX (`nvidia-imex`)
is only for multi-node NVLink (NVL72 racks), which a gpu-stack VM never
spans, so it is not installed.

Sources (read 2026-12-01):
- CUDA repository on Ubuntu: NVIDIA/gpu-driver-container, ubuntu22.04/install.sh
  `fabricmanager_install`, `nscq_install`, `nvlink5_pkgs_install` (branch >= 580:
  `nvidia-fabricmanager=${DRIVER_VERSION}-1`, `libnvidia-nscq=${DRIVER_VERSION}-1`;
  else `nvidia-fabricmanager-${DRIVER_BRANCH}=...`, `libnvidia-nscq-${DRIVER_BRANCH}=...`;
  `nvlsm infiniband-diags` from branch 550).
- CUDA repository on EL: NVIDIA/gpu-driver-container rhel9/install.sh at
  038c8b5f46c24e323485d0dd823ce435c1f19c9b (>= 580: `nvidia-fabricmanager-${DRIVER_VERSION}`,
  `libnvidia-nscq-${DRIVER_VERSION}`; else `nvidia-fabric-manager-${DRIVER_VERSION}`,
  `libnvidia-nscq-${DRIVER_BRANCH}-${DRIVER_VERSION}`; `infiniband-diags nvlsm`).
- Ubuntu archive: the branch-suffixed names next to `nvidia-driver-580-server`
  (`nvidia-fabricmanager-580`, `libnvidia-nscq-580`) in public install guides;
  not read from the archive's own Packages index here: check it at the
  release you target (docs/FIELD-FACTS.md).
Whether `nvlsm` is in Ubuntu's archive was not found: on an Ubuntu NVLink 5
guest it comes from NVIDIA's CUDA repository, which must be configured.
"""

from __future__ import annotations

from dataclasses import dataclass

NEW_NAMES_FROM = 580
NVLINK5_PACKAGES = ("nvlsm", "infiniband-diags")


@dataclass(frozen=True)
class FabricPackages:
    install: tuple[str, ...]
    """Arguments to apt-get/dnf install (pinned)."""
    probe: str
    """The package whose installed version says whether Fabric Manager matches the driver."""
    hold: tuple[str, ...]
    """Names to hold (apt-mark) or versionlock (dnf)."""
    nvlink5: tuple[str, ...] = ()


def branch_of(driver_version: str) -> int:
    return int(driver_version.split(".", 1)[0])


def fabric_packages(family: str, driver_version: str, repository: str | None = None, nvlink_generation: int = 0) -> FabricPackages:
    """Fabric Manager + NSCQ (+ NVLSM on NVLink 5) for a driver version.

    family: ubuntu or rhel. repository: `ubuntu-archive` or `cuda`; None is
    what the guest scripts use (Ubuntu's archive on Ubuntu, CUDA on EL).
    """
    repository = repository or ("ubuntu-archive" if family == "ubuntu" else "cuda")
    branch = branch_of(driver_version)
    new = branch >= NEW_NAMES_FROM
    nvlink5 = NVLINK5_PACKAGES if nvlink_generation >= 5 else ()
    if family == "ubuntu" and repository == "ubuntu-archive":
        names = (f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}")
        return FabricPackages(names, names[0], names, nvlink5)
    if family == "ubuntu":
        names = ("nvidia-fabricmanager", "libnvidia-nscq") if new else (f"nvidia-fabricmanager-{branch}", f"libnvidia-nscq-{branch}")
        return FabricPackages(tuple(f"{n}={driver_version}-1" for n in names), names[0], names, nvlink5)
    if family == "rhel" and repository == "cuda":
        names = ("nvidia-fabricmanager", "libnvidia-nscq") if new else ("nvidia-fabric-manager", f"libnvidia-nscq-{branch}")
        return FabricPackages(tuple(f"{n}-{driver_version}" for n in names), names[0], names, nvlink5)
    raise ValueError(f"no Fabric Manager packages for {family} from {repository}")
