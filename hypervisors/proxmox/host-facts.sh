#!/usr/bin/env bash
# Record what gpu-stack's preflight needs from a Proxmox VE node, as one JSON
# document on stdout, in the format scripts/host-facts.sh writes on a libvirt
# host (gpu-stack-host-facts/1, docs/OPERATIONS.md), which facts/host_facts.py
# reads for both. A Proxmox VE node has no virsh, so each device is recorded
# from sysfs, the files GET /nodes/{node}/hardware/pci (what getPci asks at
# preview) reads itself (pve-common src/PVE/SysFSTools.pm lspci: class, vendor,
# device, the iommu_group link), plus numa_node, every other member of the
# IOMMU group and `resource` (BAR sizes); and the node's release from `pveversion`.
#
#   hypervisors/proxmox/host-facts.sh [--host NAME] [PCI_ADDRESS...] > hosts/NAME.facts.json
#
# Run as root on the node. Without addresses it records every NVIDIA function
# (`lspci -D -d 10de:`). --host: the name of this host in gpu-stack:hosts[].name
# (default: the short host name, lower case, which is the Proxmox VE node name).
# Read-only: it writes nothing but a temporary directory, removed on exit.
# Needs root (the sysfs files it reads), pveversion and python3 (both on every node).
# GS_SYSFS_ROOT and GS_PROC_ROOT (default /sys and /proc) exist for the tests.
set -euo pipefail
# The part both collectors share lives in scripts/host-facts-common.sh: next to this file when both were
# copied to the node, else in the checkout this file is in
here=$(dirname "${BASH_SOURCE[0]}")
common="$here/host-facts-common.sh"
[ -r "$common" ] || common="$here/../../scripts/host-facts-common.sh"
[ -r "$common" ] || { echo "host-facts.sh: $here/host-facts-common.sh not found: copy scripts/host-facts-common.sh next to $0" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR source=../../scripts/host-facts-common.sh
. "$common"

usage() { sed -n '11,18s/^# \{0,1\}//p' "$0"; }

host=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --host) [ $# -ge 2 ] || die "--host needs a name"; host=$2; shift 2 ;;
    --host=*) host=${1#--host=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) args+=("$1"); shift ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "needs root: the sysfs files it reads (resource) need it; run: sudo $0 ${*:-}"
hf_find_python
command -v pveversion >/dev/null 2>&1 || die "pveversion not found: this is not a Proxmox VE node (on a libvirt host run scripts/host-facts.sh)"

hf_select_devices ${args[@]+"${args[@]}"}

# the identity GET /nodes/{node}/hardware/pci reports (SysFSTools.pm lspci: first line of each file,
# the group the iommu_group link ends in), plus numa_node and the group's members
identity() {
  local f g m dev=$3
  for f in class vendor device numa_node; do
    [ -r "$dev/$f" ] || die "cannot read $dev/$f"
    head -n1 "$dev/$f" > "$2/$f"
  done
  if [ -e "$dev/iommu_group" ]; then
    g=$(readlink "$dev/iommu_group")
    printf '%s' "${g##*/}" > "$2/iommu_group"
    for m in "$dev/iommu_group/devices"/*; do
      [ -e "$m" ] && printf '%s\n' "${m##*/}"
    done | LC_ALL=C sort > "$2/members"
  fi
}
hf_collect_devices identity

# the node name is the short host name (pve-common src/PVE/INotify.pm nodename: uname, domain stripped)
node=$(hf_short_hostname)
printf '%s' "$node" > "$work/node"
[ -n "$host" ] || host=$node
hf_collect_host "$host"

# `pveversion` prints pve-manager/<version>/<repoid> (running kernel: <release>) (pve-manager bin/pveversion,
# PVE/pvecfg.pm.in version_text); the release is the version's first two parts (Makefile PVERELEASE)
pveversion > "$work/pveversion" 2> "$work/pve_err" || die "pveversion failed: $(tr '\n' ' ' < "$work/pve_err")"

hf_write_json <<'PY'
COLLECTOR = "hypervisors/proxmox/host-facts.sh"


def hypervisor():
    pveversion = read("pveversion")
    pve = re.match(r"pve-manager/((\d+)\.(\d+)(?:\.\d+)*(?:-\S+)?)/(\S+) ", pveversion)
    if not pve:
        fail(f"`pveversion` does not print pve-manager/<version>/<repoid>: {pveversion.strip()!r}")
    return "proxmox", {
        "release": f"{pve.group(2)}.{pve.group(3)}",
        "managerVersion": pve.group(1),
        "node": read("node").strip(),
        "pveversion": pveversion,
    }


def device(d):
    group = read("devices", d, "iommu_group").strip()
    return {"sysfs": {
        "class": read("devices", d, "class").strip(),
        "vendor": read("devices", d, "vendor").strip(),
        "device": read("devices", d, "device").strip(),
        "numaNode": int(read("devices", d, "numa_node").strip()),
        "iommuGroup": int(group) if group else -1,
        "iommuGroupMembers": read("devices", d, "members").split(),
    }}
PY
