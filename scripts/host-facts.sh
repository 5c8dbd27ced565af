#!/usr/bin/env bash
# Record what gpu-stack's preflight needs from this hypervisor, as one JSON
# document on stdout (format gpu-stack-host-facts/1, docs/OPERATIONS.md):
# each device's `virsh nodedev-dumpxml` (IOMMU group and members, NUMA node)
# and sysfs `resource` (BAR sizes), every other member of its IOMMU group too,
# the CPU's physical address bits, the NUMA nodes' CPUs and memory, the SMT
# sibling lists, whether the IOMMU is on and vfio-pci available, and the
# libvirt and QEMU versions.
#
#   sudo scripts/host-facts.sh [--host NAME] [--connect URI] [PCI_ADDRESS...] > hosts/NAME.facts.json
#
# Without addresses it records every NVIDIA function (`lspci -D -d 10de:`).
# --host: the name of this host in gpu-stack:hosts[].name (default: the short
# host name, lower case). --connect: libvirt URI (default qemu:///system).
# Read-only: it writes nothing but a temporary directory, removed on exit.
# Needs root (virsh on qemu:///system) and python3 (to write the JSON).
# GS_SYSFS_ROOT and GS_PROC_ROOT (default /sys and /proc) exist for the tests.
set -euo pipefail
# The part both collectors share (the Proxmox VE one is hypervisors/proxmox/host-facts.sh) lives next to
# this file: copy both, or run it from a checkout
here=$(dirname "${BASH_SOURCE[0]}")
[ -r "$here/host-facts-common.sh" ] || { echo "host-facts.sh: $here/host-facts-common.sh not found: copy scripts/host-facts-common.sh next to $0" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR source=host-facts-common.sh
. "$here/host-facts-common.sh"

usage() { sed -n '10,17s/^# \{0,1\}//p' "$0"; }

host=""
uri="qemu:///system"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --host) [ $# -ge 2 ] || die "--host needs a name"; host=$2; shift 2 ;;
    --host=*) host=${1#--host=}; shift ;;
    --connect|-c) [ $# -ge 2 ] || die "--connect needs a libvirt URI"; uri=$2; shift 2 ;;
    --connect=*) uri=${1#--connect=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; args+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) args+=("$1"); shift ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "needs root: virsh on $uri and the sysfs files it reads need it; run: sudo $0 ${*:-}"
hf_find_python
command -v virsh >/dev/null 2>&1 || die "virsh not found: install libvirt-clients (Debian/Ubuntu) or libvirt-client (RHEL)"

hf_select_devices ${args[@]+"${args[@]}"}

# each device's node-device XML (IOMMU group and members, NUMA node)
nodedev() {
  local name
  name="pci_$(printf '%s' "$1" | tr ':.' '__')"
  virsh -c "$uri" nodedev-dumpxml "$name" > "$2/xml" 2> "$2/err" \
    || die "virsh -c $uri nodedev-dumpxml $name failed: $(tr '\n' ' ' < "$2/err")"
}
hf_collect_devices nodedev

[ -n "$host" ] || host=$(hf_short_hostname)
hf_collect_host "$host"

virsh -c "$uri" version > "$work/virsh_version" 2> "$work/virsh_err" \
  || die "virsh -c $uri version failed: $(tr '\n' ' ' < "$work/virsh_err")"
printf '%s' "$uri" > "$work/uri"

hf_write_json <<'PY'
COLLECTOR = "scripts/host-facts.sh"


def hypervisor():
    version = read("virsh_version")
    libvirt = re.search(r"Using library: libvirt (\d+(?:\.\d+)*)", version)
    qemu = re.search(r"Running hypervisor: QEMU (\d+(?:\.\d+)*)", version)
    if not libvirt or not qemu:
        fail(f"`virsh version` does not name the libvirt library and a QEMU hypervisor: {version.strip()!r}")
    return "libvirt", {
        "uri": read("uri"),
        "libvirtVersion": libvirt.group(1),
        "qemuVersion": qemu.group(1),
        "virshVersion": version,
    }


def device(d):
    return {"nodedevXml": read("devices", d, "xml")}
PY
