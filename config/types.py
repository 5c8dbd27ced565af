"""Validated scalar types for the stack config.

Each type normalises what users write (upper-case hex, spaces in CPU lists) so
that the same intent always renders the same bytes, and rejects bad input with
a message that says what is accepted.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

_PCI = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_CPU_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION3 = re.compile(r"^\d+\.\d+\.\d+$")
# useradd's default NAME_REGEX (Debian adduser.conf / shadow-utils): POSIX portable user names.
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# Kubernetes apimachinery validation (k8s.io/apimachinery/pkg/util/validation).
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# The image reference grammar of github.com/distribution/reference (reference.go).
_REF_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REF_DOMAIN = rf"(?:{_REF_DOMAIN_COMPONENT}(?:\.{_REF_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_REF_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REF_NAME = rf"(?:{_REF_DOMAIN}/)?{_REF_PATH_COMPONENT}(?:/{_REF_PATH_COMPONENT})*"
_REF_TAG = r"[\w][\w.-]{0,127}"
_REF_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REPOSITORY = re.compile(rf"^{_REF_NAME}$")
_IMAGE = re.compile(rf"^(?P<name>{_REF_NAME})(?::(?P<tag>{_REF_TAG}))?(?:@(?P<digest>{_REF_DIGEST}))?$")
_TAG = re.compile(rf"^{_REF_TAG}$")
_REGISTRY_HOST = re.compile(rf"^{_REF_DOMAIN}$")
_NO_PROXY_ITEM = re.compile(r"^[^\s,]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# vim.vm.GuestOsDescriptor.GuestOsIdentifier: rhel9_64Guest, ubuntu64Guest, otherLinux64Guest, otherGuest64, ...
_VSPHERE_GUEST_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*Guest(64)?$")
# An OpenSSH public key line (`ssh-keyscan` / *.pub): type, base64 blob, optional comment. The
# types are the host key types Go's SSH client (golang.org/x/crypto/ssh, the libvirt
# provider's client) can check against a known_hosts line.
SSH_HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
_SSH_PUBLIC_KEY = re.compile(r"^(?P<type>[a-z0-9@.-]+) (?P<blob>[A-Za-z0-9+/]+={0,3})(?: [^\r\n]*)?$")


def _pci(value: str) -> str:
    v = value.strip().lower()
    if not _PCI.match(v):
        raise ValueError(
            f"{value!r} is not a PCI address; expected domain:bus:slot.function in hex, "
            "for example 0000:17:00.0 (as `lspci -D` prints it)"
        )
    return v


def _ssh_host_key(value: str) -> str:
    """`type base64` of an OpenSSH public key, its comment dropped; the blob must name the same type."""
    import base64
    import binascii
    import struct

    m = _SSH_PUBLIC_KEY.match(value.strip())
    accepted = f"expected one line of `ssh-keyscan -t ed25519 HOST` without the host name, e.g. 'ssh-ed25519 AAAAC3Nza...'; types: {', '.join(SSH_HOST_KEY_TYPES)}"
    if not m:
        raise ValueError(f"{value!r} is not an SSH public key; {accepted}")
    if m["type"] not in SSH_HOST_KEY_TYPES:
        raise ValueError(f"key type {m['type']!r} is not accepted; {accepted}")
    try:
        blob = base64.b64decode(m["blob"], validate=True)
        (n,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + n].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ValueError(f"the key data of {m['type']} is not valid base64 of an SSH key; {accepted}") from None
    if inner != m["type"]:
        raise ValueError(f"the key data is a {inner!r} key but the line says {m['type']!r}; {accepted}")
    return f"{m['type']} {m['blob']}"


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


def _ssh_user(value: str) -> str:
    if not _USER.match(value):
        raise ValueError(
            f"{value!r} is not a valid user name; expected what useradd accepts: a lower-case letter or '_', "
            "then lower-case letters, digits, '_' or '-', at most 32 characters (for example ubuntu, cloud-user)"
        )
    return value


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address; expected four decimal octets 0-255, for example 192.168.122.146") from None


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{value!r} is not a network in CIDR notation; expected an address and a prefix length, for example 10.244.0.0/16")
    try:
        return str(ipaddress.ip_network(value.strip(), strict=True))
    except ValueError as e:
        hint = ""
        try:
            hint = f"; did you mean {ipaddress.ip_network(value.strip(), strict=False)}?"
        except ValueError:
            pass
        raise ValueError(f"{value!r} is not a network in CIDR notation ({e}); expected an address with its host bits zero and a prefix length, for example 10.244.0.0/16{hint}") from None


# What a URL-valued key says instead of user:password@ in its URL: the key that takes the user and the
# secret that takes the password (set with `pulumi config set --secret`), or why there is none. A URL's
# userinfo is plain config: it would travel into the plan, the rendered scripts, the state and the logs.
PROXY_CREDENTIALS = "put the user in guest.proxy.username and the password in the secret gpu-stack:proxyPassword"
REPOSITORY_CREDENTIALS = "put the user in guest.repositoryUsername and the password in the secret gpu-stack:repositoryPassword"
REGISTRY_CREDENTIALS = "put the user in guest.registryUsername and the password in the secret gpu-stack:registryPassword"
VSPHERE_CREDENTIALS = "give them as the secrets gpu-stack:vsphereUser and gpu-stack:vspherePassword"
LIBVIRT_CREDENTIALS = ("the libvirt provider logs in with the key gpu-stack:hypervisorSshPrivateKey "
                       "(else gpu-stack:sshPrivateKey), never a password: write qemu+ssh://root@HOST/system")
NO_CREDENTIALS = "gpu-stack passes no credentials for this URL: serve it where none are needed (a path on the host or an internal mirror)"


def redacted(value: str) -> str:
    """The URL with its userinfo replaced by ***, so that a refusal never prints a password."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return value
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


def credentials_problem(value: str, instead: str, user_allowed: bool = False) -> str | None:
    """Why `value` may not carry its userinfo, or None: the one rule for every URL-valued key.

    user_allowed: a user name without a password is part of what the URL means (qemu+ssh://root@HOST).
    """
    scheme, sep, rest = value.strip().partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0] if sep else ""
    if "@" not in authority:
        return None
    userinfo = authority.rpartition("@")[0]
    if user_allowed and ":" not in userinfo:
        return None
    what = "a password (user:password@)" if user_allowed else "credentials (user:password@ or user@)"
    return f"{redacted(value.strip())} carries {what}, which would travel in plain text into the plan, the scripts, the state and the logs; {instead}"


def _url(value: str, schemes: tuple[str, ...], example: str, credentials: str) -> str:
    problem = credentials_problem(value, credentials)
    if problem:
        raise ValueError(problem)
    parts = urlsplit(value.strip())
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"{value!r} is not a URL with a scheme and a host; expected {' or '.join(s + '://' for s in schemes)}host[:port][/path], for example {example}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port; expected 1-65535, for example {example}") from None
    if any(c.isspace() for c in value.strip()):
        raise ValueError(f"{value!r} contains white space; expected a URL such as {example}")
    return value.strip()


def url_type(schemes: tuple[str, ...], example: str, credentials: str, *, paths: bool = False, base: bool = False) -> object:
    """A URL-valued config type. Every URL key is one of these, so all get the same checks, the
    refusal of userinfo first. paths: an absolute host path is accepted too. base: no trailing '/'."""

    def check(value: str) -> str:
        if paths and value.startswith("/") and not any(c.isspace() for c in value):
            return value
        url = _url(value, schemes, f"{example} or an absolute path such as /srv/mirror/x.run" if paths else example, credentials)
        if base and url.endswith("/"):
            raise ValueError(f"{value!r} ends with '/'; give the base URL without it (paths are appended), for example {example}")
        return url

    return Annotated[str, AfterValidator(check)]


def _abs_path(value: str) -> str:
    if not value.startswith("/") or "\0" in value or "\n" in value:
        raise ValueError(f"{value!r} is not an absolute path; expected a path on the host such as /usr/share/OVMF/OVMF_CODE_4M.fd")
    return value


def _no_proxy_item(value: str) -> str:
    if not _NO_PROXY_ITEM.match(value):
        raise ValueError(f"{value!r} is not a no_proxy entry; expected one host, domain suffix (.svc), IP or CIDR without spaces or commas")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes object name; expected a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
                         "starting and ending with a letter or digit, at most 253 characters")
    return value


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes qualified name (label or taint key), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return f"prefix {prefix!r} must be a DNS-1123 subdomain (lower-case letters, digits, '-', '.'; at most 253 characters)"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (f"name {name!r} must be 1-63 characters of letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit (optionally after a DNS-subdomain prefix and '/', as in nvidia.com/gpu.present)")
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return "a label value must be empty or 1-63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    return None


def _qualified_name(value: str) -> str:
    problem = qualified_name_problem(value)
    if problem:
        raise ValueError(f"{value!r} is not a valid Kubernetes key: {problem}")
    return value


def _label_value(value: str) -> str:
    problem = label_value_problem(value)
    if problem:
        raise ValueError(f"{value!r} is not valid: {problem}")
    return value


def split_image(reference: str) -> tuple[str, str]:
    """(repository, ':tag' or '@digest' or ':tag@digest') of a validated image reference."""
    m = _IMAGE.match(reference)
    assert m and (m["tag"] or m["digest"]), reference
    return m["name"], (f":{m['tag']}" if m["tag"] else "") + (f"@{m['digest']}" if m["digest"] else "")


def _image(value: str) -> str:
    m = _IMAGE.match(value)
    if not m or len(m["name"]) > 255:
        raise ValueError(f"{value!r} is not an image reference; expected [registry[:port]/]path/name:tag with a lower-case path, for example nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04")
    if not m["tag"] and not m["digest"]:
        raise ValueError(f"{value!r} has no tag; pin one (name:tag or name@sha256:<digest>), for example nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04")
    return value


def _repository(value: str) -> str:
    if _REPOSITORY.match(value) and len(value) <= 255:
        return value
    if _IMAGE.match(value):
        raise ValueError(f"{value!r} carries a tag or digest; give the repository only (the tag comes from the add-on version), for example harbor.lab.local/nvidia/k8s-device-plugin")
    raise ValueError(f"{value!r} is not an image repository; expected [registry[:port]/]path/name in lower case, for example harbor.lab.local/nvidia/k8s-device-plugin")


def _image_tag(value: str) -> str:
    if not _TAG.match(value):
        raise ValueError(f"{value!r} is not an image tag; expected 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-', for example 4.5.3-4.8.2-ubuntu22.04")
    return value


def _registry_host(value: str) -> str:
    if not _REGISTRY_HOST.match(value):
        raise ValueError(f"{value!r} is not a registry host; expected host[:port] without a scheme or path, for example nvcr.io or harbor.lab.local:5000")
    return value


def _non_blank(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be a non-empty word without white space")
    return value


def _inventory_name(value: str) -> str:
    if not value.strip() or value != value.strip() or _CONTROL.search(value):
        raise ValueError(
            f"{value!r} is not a vSphere inventory name; expected the name as vCenter shows it: not empty, "
            "no leading or trailing white space, no control characters such as newlines or tabs (for example VM Network)"
        )
    return value


def _inventory_folder(value: str) -> str:
    _inventory_name(value)
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError(
            f"{value!r} is not a folder path relative to the datacenter's vm folder; expected folder names joined by '/', "
            "without a leading, trailing or doubled '/' (for example gpu/k8s for /<datacenter>/vm/gpu/k8s)"
        )
    return value


def _vsphere_guest_id(value: str) -> str:
    if not _VSPHERE_GUEST_ID.match(value):
        raise ValueError(
            f"{value!r} is not a vSphere guest OS id; expected a VirtualMachineGuestOsIdentifier such as rhel9_64Guest, "
            "ubuntu64Guest or otherLinux64Guest (unset: the template's)"
        )
    return value


def _vcenter_endpoint(value: str) -> str:
    problem = credentials_problem(f"https://{value}", VSPHERE_CREDENTIALS)
    if problem:
        raise ValueError(problem.replace("https://", "", 1))
    if not _REGISTRY_HOST.match(value):
        raise ValueError(
            f"{value!r} is not a vCenter host name or address; expected host[:port] without a scheme or path "
            "(the provider connects to https://<endpoint>/sdk), for example vcenter.lab.local or 10.203.43.5"
        )
    return value


def _libvirt_uri(value: str) -> str:
    problem = credentials_problem(value, LIBVIRT_CREDENTIALS, user_allowed=True)
    if problem:
        raise ValueError(problem)
    return value


PciAddress = Annotated[str, AfterValidator(_pci)]
MacAddress = Annotated[str, AfterValidator(_mac)]
SshHostKey = Annotated[str, AfterValidator(_ssh_host_key)]
CpuList = Annotated[str, AfterValidator(_cpu_list)]
Name = Annotated[str, AfterValidator(_name)]
Version3 = Annotated[str, AfterValidator(_version3)]
SshUser = Annotated[str, AfterValidator(_ssh_user)]
IPv4 = Annotated[str, AfterValidator(_ipv4)]
Cidr = Annotated[str, AfterValidator(_cidr)]
ProxyUrl = url_type(("http", "https"), "http://proxy.lab.local:3128", PROXY_CREDENTIALS)
RegistryMirrorUrl = url_type(("http", "https"), "https://harbor.lab.local/v2/nvcr", REGISTRY_CREDENTIALS)
RepositoryUrl = url_type(("http", "https"), "https://pkgs.k8s.io/core:/stable:/v1.32", REPOSITORY_CREDENTIALS)
ImageUrl = url_type(("http", "https"), "https://images.lab.local/noble.img", NO_CREDENTIALS)
UrlOrPath = url_type(("http", "https", "ftp", "file"), "https://example.com/x.run", NO_CREDENTIALS, paths=True)
DownloadUrlOrPath = url_type(("http", "https", "ftp", "file"), "https://example.com/x.run", REPOSITORY_CREDENTIALS, paths=True)
AbsPath = Annotated[str, AfterValidator(_abs_path)]
NoProxyItem = Annotated[str, AfterValidator(_no_proxy_item)]
DnsSubdomain = Annotated[str, AfterValidator(_dns_subdomain)]
QualifiedName = Annotated[str, AfterValidator(_qualified_name)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
ImageReference = Annotated[str, AfterValidator(_image)]
ImageRepository = Annotated[str, AfterValidator(_repository)]
ImageTag = Annotated[str, AfterValidator(_image_tag)]
RegistryHost = Annotated[str, AfterValidator(_registry_host)]
Word = Annotated[str, AfterValidator(_non_blank)]
InventoryName = Annotated[str, AfterValidator(_inventory_name)]
InventoryFolder = Annotated[str, AfterValidator(_inventory_folder)]
VsphereGuestId = Annotated[str, AfterValidator(_vsphere_guest_id)]
OvfUrl = url_type(("http", "https"), "http://mirror.lab.local/images/alma-9.6.ova", NO_CREDENTIALS)
VcenterEndpoint = Annotated[str, AfterValidator(_vcenter_endpoint)]
LibvirtUri = Annotated[str, AfterValidator(_libvirt_uri)]
BaseUrl = url_type(("http", "https"), "https://download.docker.com/linux", REPOSITORY_CREDENTIALS, base=True)


def pci_parts(address: str) -> tuple[int, int, int, int]:
    """(domain, bus, slot, function) of a normalised PCI address."""
    m = _PCI.match(address)
    assert m, address
    return tuple(int(g, 16) for g in m.groups())  # type: ignore[return-value]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))


def version_key(version: str | tuple[int, ...]) -> tuple[int, int, int]:
    """Three numbers, so that "8.7" compares as 8.7.0 (a two-part version meets its .0 minimum)."""
    parts = version_tuple(version) if isinstance(version, str) else tuple(version)
    return (parts + (0, 0, 0))[:3]  # type: ignore[return-value]
