# shellcheck shell=bash
# What both host-facts collectors record the same way, sourced by each:
# scripts/host-facts.sh (libvirt) and hypervisors/proxmox/host-facts.sh (a
# Proxmox VE node). The PCI addresses to record and their IOMMU groups' other
# members, each device's driver and sysfs `resource` (BAR sizes), the host
# name, CPU address bits, kernel, NUMA nodes, SMT sibling lists, IOMMU and
# vfio-pci, and the gpu-stack-host-facts/1 JSON writer. What a collector adds
# (per device, and its hypervisor's section) it passes in: a function
# hf_collect_devices calls for each device, and the Python that
# hf_write_json reads on stdin (COLLECTOR, hypervisor(), device(d)).
# Not a program: it defines functions and runs nothing but the assignments below.

SYS=${GS_SYSFS_ROOT:-/sys}
PROC=${GS_PROC_ROOT:-/proc}
FORMAT=gpu-stack-host-facts/1

die() { echo "host-facts.sh: $*" >&2; exit 1; }

# python: python3, or RHEL's platform-python
hf_find_python() {
  local p
  python=""
  for p in python3 /usr/libexec/platform-python; do
    if command -v "$p" >/dev/null 2>&1; then python=$(command -v "$p"); break; fi
  done
  [ -n "$python" ] || die "needs python3 to write the JSON (Debian/Ubuntu: apt-get install python3; RHEL: dnf install python3)"
}

# 3b:00.0 / 0000:3B:00.0 -> 0000:3b:00.0
normalise() {
  local a
  a=$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')
  case "$a" in
    [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f].[0-7]) a="0000:$a" ;;
  esac
  printf '%s' "$a" | grep -Eq '^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$' \
    || die "'$1' is not a PCI address; expected domain:bus:slot.function as \`lspci -D\` prints it, e.g. 0000:17:00.0"
  printf '%s\n' "$a"
}

# hf_select_devices [PCI_ADDRESS...]: requested (the addresses given, or every NVIDIA function), all (requested
# ones first, in the order given, then the other members of their groups), and work, the temporary directory
hf_select_devices() {
  local a m addr group
  requested=()
  if [ $# -eq 0 ]; then
    command -v lspci >/dev/null 2>&1 || die "lspci not found: install pciutils, or pass the PCI addresses"
    while read -r addr _; do
      [ -n "$addr" ] && requested+=("$(normalise "$addr")")
    done < <(lspci -D -d 10de:)
    [ ${#requested[@]} -gt 0 ] || die "lspci -D -d 10de: lists no NVIDIA device; pass the PCI addresses"
  else
    for a in "$@"; do requested+=("$(normalise "$a")"); done
  fi

  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/devices" "$work/nodes"

  all=()
  seen=" "
  for a in "${requested[@]}"; do
    [ -d "$SYS/bus/pci/devices/$a" ] || die "no PCI device $a on this host ($SYS/bus/pci/devices/$a); check it with \`lspci -D -d 10de:\`"
    hf_add "$a" || true
  done
  for a in "${requested[@]}"; do
    group="$SYS/bus/pci/devices/$a/iommu_group/devices"
    [ -d "$group" ] || continue
    for m in "$group"/*; do
      [ -e "$m" ] || continue
      hf_add "${m##*/}" || true
    done
  done
}
hf_add() { case "$seen" in *" $1 "*) return 1 ;; esac; seen="$seen$1 "; all+=("$1"); }

# hf_collect_devices FUNCTION: $work/devices/NNN/ per device (address, requested, driver, resource), then
# FUNCTION ADDRESS DIR SYSFS_DIR for what the collector records of it
hf_collect_devices() {
  local i=0 a d dev drv
  for a in "${all[@]}"; do
    d="$work/devices/$(printf '%03d' "$i")"
    mkdir "$d"
    printf '%s' "$a" > "$d/address"
    case " ${requested[*]} " in *" $a "*) echo 1 > "$d/requested" ;; *) echo 0 > "$d/requested" ;; esac
    dev="$SYS/bus/pci/devices/$a"
    if [ -e "$dev/driver" ]; then
      drv=$(readlink "$dev/driver" 2>/dev/null || true)
      printf '%s' "${drv##*/}" > "$d/driver"
    fi
    [ -r "$dev/resource" ] || die "cannot read $dev/resource"
    cat "$dev/resource" > "$d/resource"
    "$1" "$a" "$d" "$dev"
    i=$((i + 1))
  done
}

# the short host name, lower case as written: the kernel's host name, domain stripped
hf_short_hostname() {
  local h
  h=$(cat "$PROC/sys/kernel/hostname") || return
  printf '%s\n' "${h%%.*}"
}

# hf_collect_host NAME: the host's name, CPU, kernel, NUMA nodes, SMT, IOMMU and vfio-pci
hf_collect_host() {
  local found n id t g groups
  printf '%s' "$1" | tr '[:upper:]' '[:lower:]' > "$work/host"
  grep -m1 '^address sizes' "$PROC/cpuinfo" > "$work/address_sizes" || die "$PROC/cpuinfo has no 'address sizes' line"
  grep -m1 '^model name' "$PROC/cpuinfo" > "$work/model" || true
  cat "$PROC/cmdline" > "$work/cmdline"
  cat "$PROC/sys/kernel/osrelease" > "$work/kernel" 2>/dev/null || true

  # NUMA nodes: cpulist and MemTotal; a kernel without NUMA gets one node 0
  found=0
  for n in "$SYS"/devices/system/node/node[0-9]*; do
    [ -d "$n" ] || continue
    id=${n##*node}
    mkdir "$work/nodes/$id"
    cat "$n/cpulist" > "$work/nodes/$id/cpulist"
    cat "$n/meminfo" > "$work/nodes/$id/meminfo"
    # 1 GiB hugepages of this node (Documentation/admin-guide/mm/hugetlbpage.rst, per-node
    # /sys/devices/system/node/nodeN/hugepages/hugepages-1048576kB/): nr_hugepages, the node's pool
    # (what the preflight counts the VMs against), and free_hugepages, what was unused when the facts
    # were taken (informational: running VMs of this stack hold theirs); absent: none configured
    cat "$n/hugepages/hugepages-1048576kB/nr_hugepages" > "$work/nodes/$id/total_1g" 2>/dev/null || true
    cat "$n/hugepages/hugepages-1048576kB/free_hugepages" > "$work/nodes/$id/free_1g" 2>/dev/null || true
    found=1
  done
  if [ "$found" -eq 0 ]; then
    mkdir "$work/nodes/0"
    cat "$SYS/devices/system/cpu/online" > "$work/nodes/0/cpulist"
    sed 's/^/Node 0 /' "$PROC/meminfo" > "$work/nodes/0/meminfo"
  fi

  # SMT: the distinct sibling lists
  for t in "$SYS"/devices/system/cpu/cpu[0-9]*/topology/thread_siblings_list; do
    [ -r "$t" ] && cat "$t"
  done | LC_ALL=C sort -u | LC_ALL=C sort -n > "$work/siblings"
  if [ -r "$SYS/devices/system/cpu/smt/active" ]; then cat "$SYS/devices/system/cpu/smt/active" > "$work/smt_active"; fi

  # IOMMU and vfio-pci
  groups=0
  for g in "$SYS"/kernel/iommu_groups/*; do
    [ -e "$g" ] && groups=$((groups + 1))
  done
  echo "$groups" > "$work/iommu_groups"
  if [ -d "$SYS/module/vfio_pci" ]; then echo 1 > "$work/vfio_loaded"; else echo 0 > "$work/vfio_loaded"; fi
  if [ -d "$SYS/bus/pci/drivers/vfio-pci" ]; then echo 1 > "$work/vfio_driver"; else echo 0 > "$work/vfio_driver"; fi
  if command -v modinfo >/dev/null 2>&1; then
    modinfo -n vfio-pci > "$work/vfio_module" 2>/dev/null || true
  fi
}

# hf_write_json < COLLECTOR_PYTHON: the document on stdout. COLLECTOR_PYTHON runs between the helpers (read, fail)
# and the document; it sets COLLECTOR (the collector's path in the repository) and defines hypervisor(), called
# once the address sizes are read, returning the hypervisor section's key and value, and device(d), the keys a
# device's entry holds between driver and resource.
hf_write_json() {
  if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ > "$work/collected_at"
  else
    date -u +%Y-%m-%dT%H:%M:%SZ > "$work/collected_at"
  fi
  { hf_python_head; cat; hf_python_body; } | "$python" - "$work" "$FORMAT"
}

hf_python_head() {
  cat <<'PY'
import json
import os
import re
import sys

work, fmt = sys.argv[1], sys.argv[2]


def read(*parts, default=""):
    path = os.path.join(work, *parts)
    if not os.path.exists(path):
        return default
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def fail(message):
    sys.stderr.write(f"host-facts.sh: {message}\n")
    sys.exit(1)


PY
}

hf_python_body() {
  cat <<'PY'


sizes = re.search(r"(\d+) bits physical, (\d+) bits virtual", read("address_sizes"))
if not sizes:
    fail(f"cannot read the address sizes from /proc/cpuinfo: {read('address_sizes').strip()!r}")
section, section_facts = hypervisor()

nodes = []
for node in sorted(os.listdir(os.path.join(work, "nodes")), key=int):
    mem = re.search(r"MemTotal:\s+(\d+) kB", read("nodes", node, "meminfo"))
    if not mem:
        fail(f"no MemTotal in the meminfo of NUMA node {node}")
    total_1g = read("nodes", node, "total_1g", default="").strip()
    free_1g = read("nodes", node, "free_1g", default="").strip()
    nodes.append({"id": int(node), "cpus": read("nodes", node, "cpulist").strip(), "memoryKib": int(mem.group(1)),
                  "hugepages1g": int(total_1g) if total_1g else 0,
                  "freeHugepages1g": int(free_1g) if free_1g else 0})

cmdline = read("cmdline").split()
iommu_args = [a for a in cmdline if re.match(r"^(intel_iommu|amd_iommu|iommu)=", a)]
groups = int(read("iommu_groups", default="0").strip() or 0)
module = read("vfio_module").strip()
loaded = read("vfio_loaded").strip() == "1"
driver_registered = read("vfio_driver").strip() == "1"
smt_active = read("smt_active").strip()

devices = []
for d in sorted(os.listdir(os.path.join(work, "devices"))):
    entry = {
        "address": read("devices", d, "address"),
        "requested": read("devices", d, "requested").strip() == "1",
        "driver": read("devices", d, "driver") or None,
        **device(d),
        "resource": read("devices", d, "resource"),
    }
    devices.append(entry)

doc = {
    "format": fmt,
    "host": read("host").strip(),
    "collectedAt": read("collected_at").strip(),
    "collector": COLLECTOR,
    "kernel": {"release": read("kernel").strip(), "cmdline": read("cmdline").strip()},
    "cpu": {
        "physAddrBits": int(sizes.group(1)),
        "virtAddrBits": int(sizes.group(2)),
        "model": read("model").split(":", 1)[-1].strip(),
    },
    "numaNodes": nodes,
    "smt": {
        "active": None if smt_active == "" else smt_active == "1",
        "siblings": [s for s in read("siblings").splitlines() if s.strip()],
    },
    "iommu": {"enabled": groups > 0, "groups": groups, "cmdline": iommu_args},
    "vfioPci": {"available": loaded or driver_registered or bool(module), "loaded": loaded, "module": module},
    section: section_facts,
    "devices": devices,
}
json.dump(doc, sys.stdout, indent=2)
sys.stdout.write("\n")
PY
}
