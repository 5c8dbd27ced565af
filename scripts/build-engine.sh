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
#
# A [[binary]] with `generate` has a main package that embeds files its module zip does not carry
# (the pulumi-kubernetes provider: schema-embed.json, terraform-mapping-embed.json). Its upstream
# build makes them first with `VERSION=<stamp> go generate` (the program `generate` names, in the
# package's dir); the module cache is read-only and `go build -overlay` may not add files under it,
# so the package is copied into a staging dir in the cache, the generator (built from the wrapper
# module, so at its pinned dependencies) runs there, and the package's own .go files are built from
# there against the wrapper module. Nothing generated or copied is in the repository.
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

# name, dir, package, ldflags, generate, stamp (the version upstream's build stamps; else `version`): one line per [[binary]], fields split by the ASCII unit
# separator (a tab is IFS whitespace, and `read` would fold an empty field into its neighbour)
entries="$(python3 - "$root/engine/engine.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    for b in tomllib.load(f).get("binary", []):
        print("\x1f".join((b["name"], b["dir"], b["package"], b.get("ldflags", ""), b.get("generate", ""), b.get("stamp", b["version"]))))
EOF
)"

mkdir -p "$cache/$key"
stage="$(mktemp -d "$cache/$key/bin.partial.XXXXXX")"
chmod 755 "$stage"
trap 'rm -rf "$stage"' EXIT
start=$SECONDS
# generated_build NAME DIR PACKAGE LDFLAGS GENERATE VERSION: the package copied, its generator run, then built
generated_build() {
  local name="$1" dir="$2" package="$3" ldflags="$4" generate="$5" version="$6" src work files f
  # -e: until the embedded files exist the package does not load ("pattern schema-embed.json: no matching files found")
  src="$(cd "$root/engine/$dir" && GOFLAGS="${GOFLAGS:-} -mod=readonly" go list -e -f '{{.Dir}}' "$package")"
  work="$stage/.src-$name"
  mkdir -p "$work"
  cp -R "$src/." "$work/"
  chmod -R u+w "$work"
  (cd "$root/engine/$dir" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -trimpath -o "$work/.generate" "$work/$generate")
  (cd "$work" && VERSION="$version" ./.generate)
  files=()
  for f in "$work"/*.go; do
    [ "$(basename "$f")" = "$generate" ] || files+=("$f")
  done
  (cd "$root/engine/$dir" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
    go build -trimpath -ldflags "-s -w $ldflags" -o "$stage/$name" "${files[@]}")
  rm -rf "$work"
}

while IFS=$'\x1f' read -r name dir package ldflags generate version; do
  [ -n "$name" ] || continue
  t0=$SECONDS
  echo "engine: building $name ($package) in engine/$dir" >&2
  if [ -n "$generate" ]; then
    generated_build "$name" "$dir" "$package" "$ldflags" "$generate" "$version"
  else
    (cd "$root/engine/$dir" &&
      CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly" \
        go build -trimpath -ldflags "-s -w $ldflags" -o "$stage/$name" "$package")
  fi
  echo "engine: $name built in $((SECONDS - t0))s" >&2
done <<< "$entries"
touch "$stage/.complete"
rm -rf "$bin"
mv "$stage" "$bin"
trap - EXIT
echo "engine: built in $((SECONDS - start))s into $bin" >&2
echo "$bin"
