#!/usr/bin/env bash
# Build the real engine (the [[binary]] entries of engine/engine.toml) from their pinned Go
# modules into a cache outside the repository, and print its bin directory.
#
#   scripts/build-engine.sh           build what is missing, then print the bin dir
#   scripts/build-engine.sh --print   print the bin dir without building (it may not exist)
#   scripts/build-engine.sh --check   print the bin dir if it is complete, else exit 1
#
# The cache key is a hash of the [[binary]] tables of engine/engine.toml (what is built, and
# how), every engine/*/go.mod and go.sum, our own main packages (engine/*/*.go), and the Go version, so a changed pin builds into a
# new directory and an unchanged one is reused; a note on a [[blocked]] module rebuilds nothing:
#   ${GPU_STACK_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-stack/engine}/<hash>/bin
# Plugins keep their upstream names (pulumi-resource-<name>) so the CLI finds them on PATH.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mode="${1:-build}"

cache="${GPU_STACK_ENGINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-stack/engine}"
goversion="$(go env GOVERSION 2>/dev/null || echo no-go)"
binaries() { awk '/^\[\[/ { keep = ($0 == "[[binary]]") } keep' "$root/engine/engine.toml"; }
key="$( (cd "$root" && binaries && cat engine/*/go.mod engine/*/go.sum && find engine -name '*.go' | LC_ALL=C sort | xargs -r cat && echo "$goversion") | sha256sum | cut -c1-16)"
bin="$cache/$key/bin"

case "$mode" in
  --print) echo "$bin"; exit 0 ;;
  --check) if [ -f "$bin/.complete" ]; then echo "$bin"; exit 0; else exit 1; fi ;;
  build) ;;
  *) echo "usage: $0 [--print|--check]" >&2; exit 2 ;;
esac

if [ -f "$bin/.complete" ]; then
  echo "engine: cached in $bin" >&2
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "engine: 'go' not found; install Go 1.26.6 or newer and run 'make engine'" >&2
  exit 2
fi

# name<TAB>dir<TAB>package<TAB>ldflags, one line per [[binary]]
entries="$(python3 - "$root/engine/engine.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    for b in tomllib.load(f).get("binary", []):
        print("\t".join((b["name"], b["dir"], b["package"], b.get("ldflags", ""))))
EOF
)"

mkdir -p "$cache/$key"
stage="$(mktemp -d "$cache/$key/bin.partial.XXXXXX")"
chmod 755 "$stage"
trap 'rm -rf "$stage"' EXIT
start=$SECONDS
while IFS=$'\t' read -r name dir package ldflags; do
  [ -n "$name" ] || continue
  t0=$SECONDS
  echo "engine: building $name ($package) in engine/$dir" >&2
  (cd "$root/engine/$dir" &&
    CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
      go build -trimpath -ldflags "-s -w $ldflags" -o "$stage/$name" "$package")
  echo "engine: $name built in $((SECONDS - t0))s" >&2
done <<< "$entries"
touch "$stage/.complete"
rm -rf "$bin"
mv "$stage" "$bin"
trap - EXIT
echo "engine: built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
