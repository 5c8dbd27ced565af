#!/bin/sh
# KubeVirt onDefineDomain hook (sidecar-shim, hook API v1alpha2): sets the size of the
# 64-bit PCI hole on the q35 root complex, which KubeVirt v1.9.0 (like v1.8.4) cannot set itself
# (it only has the kubevirt.io/disablePCIHole64 annotation). gpu-stack renders this file
# into a ConfigMap with @HOLE64_KIB@ replaced by the size from render/mmio.py.
# sidecar-shim calls it as: onDefineDomain --vmi <VMI JSON> --domain <domain XML>
# and uses what it prints as the domain XML (kubevirt cmd/sidecars/README.md).
set -eu
hole="<pcihole64 unit=\"KiB\">@HOLE64_KIB@</pcihole64>"
domain=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --domain) domain="$2"; shift 2 ;;
    *) shift ;;
  esac
done
if [ -z "$domain" ]; then
  echo "pcihole64-hook: no --domain argument" >&2
  exit 1
fi
case "$domain" in
  *'<pcihole64'*)
    # already set (by KubeVirt's disable annotation or a rerun): leave it
    printf '%s\n' "$domain" ;;
  *'model="pcie-root">'*)
    printf '%s\n' "$domain" | sed "s|\(<controller type=\"pci\" index=\"0\" model=\"pcie-root\">\)|\1${hole}|" ;;
  *)
    printf '%s\n' "$domain" | sed "s|</devices>|<controller type=\"pci\" index=\"0\" model=\"pcie-root\">${hole}</controller></devices>|" ;;
esac
