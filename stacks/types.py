"""Validated scalar types for the stack config.

Each type normalises what users write (upper-case hex, spaces in CPU lists) so
that the same intent always renders the same bytes, and rejects bad input with
a message that says what is accepted.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_PCI = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_CPU_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION3 = re.compile(r"^\d+\.\d+\.\d+$")


def _pci(value: str) -> str:
    v = value.strip().lower()
    if not _PCI.match(v):
        raise ValueError(
            f"{value!r} is not a PCI address; expected domain:bus:slot.function in hex, "
            "for example 0000:17:00.0 (as `lspci -D` prints it)"
        )
    return v


def _mac(value: str) -> str:
    v = value.strip().lower().replace("-", ":")
    if not _MAC.match(v):
        raise ValueError(f"{value!r} is not a MAC address; expected six hex octets like 52:54:00:a9:a2:11")
    first = int(v[:2], 16)
    if first & 1:
        raise ValueError(f"{value!r} is a multicast MAC (lowest bit of the first octet set); use a unicast MAC such as 52:54:00:xx:xx:xx")
    if v == "00:00:00:00:00:00":
        raise ValueError("00:00:00:00:00:00 is not a usable MAC")
    return v


def parse_cpu_list(value: str) -> tuple[int, ...]:
    """Parse a Linux cpulist ("0-3,8,10-11") into sorted CPU ids."""
    cpus: set[int] = set()
    text = value.replace(" ", "")
    if not text:
        return ()
    for item in text.split(","):
        m = _CPU_ITEM.match(item)
        if not m:
            raise ValueError(f"{value!r} is not a CPU list; expected ranges like 0-31,64-95 (as in /sys/devices/system/node/node0/cpulist)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"{value!r}: range {item} runs backwards")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: tuple[int, ...] | list[int]) -> str:
    """The inverse of parse_cpu_list, in libvirt's compact form."""
    out: list[str] = []
    ids = sorted(set(cpus))
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


def _cpu_list(value: str) -> str:
    return format_cpu_list(parse_cpu_list(value))


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name; use lower-case letters, digits and '-', 1-63 characters, as for a hostname")
    return value


def _version3(value: str) -> str:
    v = value.strip().lstrip("v")
    if not _VERSION3.match(v):
        raise ValueError(f"{value!r} is not a pinned version; expected MAJOR.MINOR.PATCH such as 1.32.4")
    return v


PciAddress = Annotated[str, AfterValidator(_pci)]
MacAddress = Annotated[str, AfterValidator(_mac)]
CpuList = Annotated[str, AfterValidator(_cpu_list)]
Name = Annotated[str, AfterValidator(_name)]
Version3 = Annotated[str, AfterValidator(_version3)]


def pci_parts(address: str) -> tuple[int, int, int, int]:
    """(domain, bus, slot, function) of a normalised PCI address."""
    m = _PCI.match(address)
    assert m, address
    return tuple(int(g, 16) for g in m.groups())  # type: ignore[return-value]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))
