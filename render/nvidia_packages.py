"""Fabric Manager, NSCQ and NVLink 5 packages by driver branch, repository and distribution.

The names changed at driver branch 580 in NVIDIA's CUDA repository, and
Ubuntu's own archive names them differently again, so an upgrade from 570 to
580 must ask for other package names. The table, per repository:

| repository | branch | Fabric Manager | NSCQ | pin |
|---|---|---|---|---|
| Ubuntu archive (Ubuntu guests: the driver is `nvidia-headless-<branch>-server`) | any the release still ships (transitional packages: below) |
  `nvidia-fabricmanager-<branch>` | `libnvidia-nscq-<branch>` | APT preferences `<version>-*` (driver.sh) |
| CUDA repository, Ubuntu | < 580 | `nvidia-fabricmanager-<branch>` | `libnvidia-nscq-<branch>` | `=<version>-1` |
| CUDA repository, Ubuntu | >= 580 | `nvidia-fabricmanager` | `libnvidia-nscq` | `=<version>-1` |
| CUDA repository, EL (EL guests: the driver is `nvidia-driver-<version>`) | < 580 | `nvidia-fabric-manager` | `libnvidia-nscq-<branch>` | `-<version>` + versionlock |
| CUDA repository, EL | >= 580 | `nvidia-fabricmanager` | `libnvidia-nscq` | `-<version>` + versionlock |

NVLink 5 (HGX B200/B300) also needs `nvlsm` (the NVLink subnet manager) and
`infiniband-diags`, unpinned as NVIDIA installs them. IMEX (`nvidia-imex`)
is only for multi-node NVLink (NVL72 racks), which a gpu-stack VM never
spans, so it is not installed.

Sources (read 2026-12-01, checked again 2026-12-02 for issue 16):
- Ubuntu archive, from Ubuntu's own package data (packages.ubuntu.com, read
  through the search index on 2026-12-02):
  - source `fabric-manager-<branch>` builds `nvidia-fabricmanager-<branch>`,
    `nvidia-fabricmanager-dev-<branch>` and `cuda-drivers-fabricmanager-<branch>`
    (e.g. noble and questing: 580.159.03-0ubuntu0.24.04.1 / -0ubuntu0.25.10.1;
    noble also has nvidia-fabricmanager-615, 615.71.09-0ubuntu0.24.04.1);
    nvidia-fabricmanager-580 depends on `nvidia-kernel-common-580-server-<version>`;
  - NSCQ is its own source, `libnvidia-nscq-<branch>`, one binary of the same
    name ("NVSwitch Configuration and Query library"; noble, questing and
    resolute: 580.159.03 / 580.173.02), Vcs-Git github.com/canonical/apt-packaging-libnvidia-nscq;
  - the Debian revision is Ubuntu's (`-0ubuntu0.<release>.N`), never NVIDIA's
    `-1`, hence the APT preferences pin on `<version>-*` (driver.sh);
  - each `-<branch>` package Provides, Replaces and Conflicts with the virtual
    `nvidia-fabricmanager` / `libnvidia-nscq`, so one branch is installed at a time:
    canonical/apt-packaging-fabric-manager @ a85ec20ba28913e83978ae6717f025082d7dafb3
    (branch 550-noble) and canonical/apt-packaging-libnvidia-nscq @
    a103e9d925e25799a305336bded2cbd3e17e4414 (570-noble), `debian/control`;
  - CAUTION, transitional packages: once a branch ends in a release, its
    `-<branch>` names become empty packages that depend on a newer branch.
    Seen: questing nvidia-fabricmanager-535 (535.261.03-0ubuntu2) -> -580 and
    nvidia-fabricmanager-590 (590.48.01-0ubuntu0.25.10.2) -> -595; noble
    libnvidia-nscq-575 (575.57.08-0ubuntu0.24.04.2) -> -580; questing
    libnvidia-nscq-550 -> -570; resolute libnvidia-nscq-535/-570 and
    nvidia-fabricmanager-dev-535/-570 (580.126.20-0ubuntu3) -> -580. The pin
    matches such a package's own version, its dependency then comes in at the
    newer branch, and the probe (the `-<branch>` package's version) still
    reads as matching; so driver.sh also checks the version of the package
    that holds /usr/bin/nv-fabricmanager (the daemon's path in both Canonical's
    `.install` template, `bin/* /usr/bin`, and NVIDIA's `fabricmanager.spec`,
    `%{_bindir}/nv-fabricmanager`) and stops with the cause. Pin a driver branch
    the target release still ships (the packages.ubuntu.com page of
    nvidia-fabricmanager-<branch> shows whether it is the real one, 8 MB, or a
    5 kB transitional one).
- CUDA repository on Ubuntu: NVIDIA/gpu-driver-container, ubuntu22.04/install.sh
  `fabricmanager_install`, `nscq_install`, `nvlink5_pkgs_install` (branch >= 580:
  `nvidia-fabricmanager=${DRIVER_VERSION}-1`, `libnvidia-nscq=${DRIVER_VERSION}-1`;
  else `nvidia-fabricmanager-${DRIVER_BRANCH}=...`, `libnvidia-nscq-${DRIVER_BRANCH}=...`;
  `nvlsm infiniband-diags` from branch 550). The branch-suffixed names and the
  `-1` revision below 580 are also NVIDIA's packaging templates:
  NVIDIA/apt-packaging-fabric-manager @ 0f01ce752c58a443f35ae78720adbf10a10ace35 and
  NVIDIA/apt-packaging-libnvidia-nscq @ be44eb7e57d90452e7f67ffc8af0d94c9eadc50a,
  `debian/templates/control.in` (`nvidia-fabricmanager-#BRANCH#`,
  `cuda-drivers-fabricmanager-#BRANCH#` depending on `(= #VERSION#-1)`,
  `libnvidia-nscq-#BRANCH#`). NVIDIA's driver installation guide ("Recent
  Updates", "Ubuntu 590 package renames", as mirrored publicly) drops the branch
  from the Ubuntu package names from 590 on and lists `libnvidia-nscq` as
  "no change", i.e. already without a branch at 580.
- CUDA repository on EL: NVIDIA/gpu-driver-container rhel9/install.sh at
  038c8b5f46c24e323485d0dd823ce435c1f19c9b (>= 580: `nvidia-fabricmanager-${DRIVER_VERSION}`,
  `libnvidia-nscq-${DRIVER_VERSION}`; else `nvidia-fabric-manager-${DRIVER_VERSION}`,
  `libnvidia-nscq-${DRIVER_BRANCH}-${DRIVER_VERSION}`; `infiniband-diags nvlsm`),
  re-read 2026-12-02: the code below matches it. NVIDIA's spec files agree for
  < 580: NVIDIA/yum-packaging-fabric-manager @ 423e29f614ce1c1b535b8110901efdd2710c7303
  `fabricmanager.spec` (`Name: nvidia-fabric-manager`, renamed from
  nvidia-fabricmanager-XXX in c7977a3e, 2021-06-24, "Loosens branch lock-in")
  and NVIDIA/yum-packaging-libnvidia-nscq @ 25fcd80eb2b4cc00eb5975964937297dbbc75082
  `libnvidia_nscq.spec` (`Name: libnvidia-nscq-%{branch}`). (The same script also
  installs `libnvsdm` and `nvidia-imex`; neither is installed here.)
- NVLink 5 in Ubuntu's archive: `infiniband-diags` is there (universe, source
  rdma-core: noble 50.0-2build2, questing 56.1-1ubuntu1, resolute 61.0-2ubuntu3);
  no `nvlsm` package was found on packages.ubuntu.com, so on an Ubuntu NVLink 5
  guest `nvlsm` must come from NVIDIA's CUDA repository, which must be configured
  (gpu-driver-container and the Ubicloud HGX B200 write-up, `apt install
  nvidia-fabricmanager nvlsm` "after enabling the CUDA repository", both take it from there).
- NVLSM for fourth-generation NVSwitches, and which systems have them ("DGX
  B200/B300, NVIDIA HGX B200/B300, and NVIDIA HGX B100"): NVIDIA Fabric Manager
  user guide, "NVSwitch Core Software Stack" / "Fourth Generation NVSwitches"
  (docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide).
- IMEX: NVIDIA's IMEX guide, "Deployment Models" ("In an NVLink multi-node cluster,
  the IMEX service must be initiated and initialized before launching CUDA
  applications", docs.nvidia.com/multi-node-nvlink-systems/imex-guide/deployment.html);
  the GPU Operator's DRA install page asks, for IMEX-backed ComputeDomains, for
  "NVIDIA Grace Blackwell GPUs with Multi-Node NVLink (MNNVL) ... For example,
  NVIDIA HGX GB200 NVL72 or NVIDIA HGX GB300 NVL72" (dra-intro-install.html, as
  quoted in NVIDIA/cloud-native-docs issue 453; dra-cds.html: IMEX maps GPU memory
  over NVLink between the nodes of an MNNVL rack). A single HGX B200/B300 is one NVLink
  domain inside one node; its NVLink is brought up by Fabric Manager and NVLSM.
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
