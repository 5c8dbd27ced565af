"""What a change of the VmLegacy's inputs does to the running VM, for rollout.json (hypervisors/base.py vm_replacements).

bpg terraform-provider-proxmox v0.111.1 (bridged by pulumi-proxmoxve 8.3.0), proxmoxtf/resource/vm/vm.go and
proxmoxtf/resource/vm/disk/{schema,disk}.go at tag v0.111.1:

- replaced: the schema's ForceNew (initialization.{user,vendor,network,meta}_data_file_id and .type, amd_sev, clone,
  disk.file_id) and VM()'s CustomizeDiff: ForceNewIf node_name (unless migrate), ForceNewIf vm_id,
  forceNewOnEFIDiskTypeChange (efi_disk.type, when both sides have an EFI disk), forceNewOnTPMVersionChange;
- restarted: vmUpdate sets rebootRequired for each input in REBOOT and then reboots the running VM
  (reboot_after_update, default true; with false the change waits, with a warning, for a manual reboot);
  cpu and memory too, unless only cpu.hotplugged changed or memory only grew and `hotplug` lists cpu / memory
  (isHotpluggable; its default, PVE's, is "network,disk,usb");
- in place: IN_PLACE, which vmUpdate changes without rebootRequired (network devices: "Network devices can be
  hotplugged, no reboot required");
- anything else (disks: a grow is online, aio or queues need a reboot, a datastore move powers the VM off; the
  provider's own settings): may restart.
"""

from __future__ import annotations

from typing import Any

from hypervisors.shared import changed_inputs

SOURCE = "bpg terraform-provider-proxmox v0.111.1"

FORCE_NEW = ("amdSev", "clone", "nodeName", "vmId")
FORCE_NEW_INITIALIZATION = ("userDataFileId", "vendorDataFileId", "networkDataFileId", "metaDataFileId", "type")
REBOOT = ("acpi", "kvmArguments", "bios", "keyboardLayout", "machine", "tabletDevice", "agent", "audioDevice", "bootOrders",
          "efiDisk", "tpmState", "rngs", "initialization", "hostpcis", "numas", "usbs", "operatingSystem", "serialDevices",
          "vga", "virtiofs", "scsiHardware", "watchdog")
IN_PLACE = ("description", "onBoot", "tags", "hotplug", "name", "protection", "networkDevices", "smbios", "startup",
            "hookScriptFileId", "poolId")


def _block(value: Any) -> dict[str, Any]:
    """A single nested block as the plan shows it (an object; a list of one in the provider's own state)."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, dict) else {}


def _replaced(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    if key in FORCE_NEW:
        return not (key == "nodeName" and new.get("migrate"))
    if key == "initialization":
        o, n = _block(old.get(key)), _block(new.get(key))
        return any(o.get(k) != n.get(k) for k in FORCE_NEW_INITIALIZATION)
    if key == "efiDisk":
        o, n = _block(old.get(key)).get("type"), _block(new.get(key)).get("type")
        return bool(o) and bool(n) and o != n
    if key == "tpmState":
        o, n = _block(old.get(key)).get("version"), _block(new.get(key)).get("version")
        return bool(o) and bool(n) and o != n
    if key == "disks":
        o = {d.get("interface"): d.get("fileId") for d in old.get(key) or [] if isinstance(d, dict)}
        return any(i in o and o[i] != d.get("fileId") for d in new.get(key) or [] if isinstance(d, dict) for i in [d.get("interface")])
    return False


def _hotplugs(new: dict[str, Any], feature: str) -> bool:
    return feature in str(new.get("hotplug") or "network,disk,usb").split(",")


def _reboots(key: str, old: dict[str, Any], new: dict[str, Any]) -> bool | None:
    """True: vmUpdate reboots for it; False: applied in place; None: it depends on more than the plan shows."""
    if key in REBOOT:
        return True
    if key in IN_PLACE:
        return False
    if key == "cpu":
        o, n = _block(old.get(key)), _block(new.get(key))
        only_hotplugged = [k for k in set(o) | set(n) if o.get(k) != n.get(k)] == ["hotplugged"]
        return not (only_hotplugged and _hotplugs(new, "cpu"))
    if key == "memory":
        o, n = _block(old.get(key)), _block(new.get(key))
        sizes = ("dedicated", "floating", "shared")
        grew = all((n.get(k) or 0) >= (o.get(k) or 0) for k in sizes) and any((n.get(k) or 0) > (o.get(k) or 0) for k in sizes)
        others = [k for k in set(o) | set(n) if k not in sizes and o.get(k) != n.get(k)]
        return not (grew and not others and _hotplugs(new, "memory"))
    return None


def replacement(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why a VmLegacy input change restarts or replaces the VM (the gravest first), or None: everything changes in place."""
    keys = changed_inputs(old, new)
    replaced = [k for k in keys if _replaced(k, old, new)]
    if replaced:
        return f"{', '.join(replaced)} changed (replaced: ForceNew in {SOURCE})"
    rebooted = [k for k in keys if _reboots(k, old, new)]
    if rebooted:
        return f"{', '.join(rebooted)} changed (restarted: the provider reboots the VM to apply it, reboot_after_update in {SOURCE})"
    unsure = [k for k in keys if _reboots(k, old, new) is None]
    if unsure:
        return f"{', '.join(unsure)} changed (may restart the VM; the plan cannot tell)"
    return None
