#!/usr/bin/env bash
# The pull request's plan diff (.github/workflows/pull-request.yml), as Markdown on stdout, and the full
# diff in $3 (plan.diff): per stack, what this branch's `make plans` changes against the base branch's.
# A stack whose plan failed on either side is marked (its errors from build/plan-errors/<stack>.txt),
# and the others are still shown: one failing stack never hides the rest.
#   scripts/plan-diff.sh BASE_PLANS HEAD_PLANS OUT_DIFF [HEAD_ERRORS] [BASE_ERRORS] [BASE_LABEL]
set -euo pipefail
base=$1 head=$2 out=$3 head_errors=${4:-} base_errors=${5:-} label=${6:-base}
limit=${PLAN_DIFF_LIMIT:-55000}
context=${PLAN_DIFF_CONTEXT:-1}  # lines of context around each change  # the job summary holds 1 MiB per step; keep every stack's part readable

stacks() {
  for d in "$base" "$head"; do
    [ -d "$d" ] && find "$d" -mindepth 1 -maxdepth 1 -type d -printf '%f\n'
  done
  for e in "$head_errors" "$base_errors"; do
    [ -n "$e" ] && [ -d "$e" ] && find "$e" -mindepth 1 -maxdepth 1 -name '*.txt' -printf '%f\n' | sed 's/\.txt$//'
  done
  return 0
}

: > "$out"
echo "## Plan diff against ${label}"
changed=0
while IFS= read -r stack; do
  [ -n "$stack" ] || continue
  # rollout.json first (what re-runs), then every other file: a cut never drops it
  # headers as a/<stack>/<file> b/<stack>/<file>, no temp paths nor timestamps, no `diff -r` command lines
  part=$({ diff -U"$context" -N "$base/$stack/rollout.json" "$head/$stack/rollout.json"
           diff -rU"$context" -N -x rollout.json "$base/$stack" "$head/$stack"; } 2>/dev/null \
         | sed -E -e '/^diff -/d' -e "s#^--- ${base%/}/([^\t]*).*#--- a/\\1#" -e "s#^\\+\\+\\+ ${head%/}/([^\t]*).*#+++ b/\\1#" || true)
  failed=""
  if [ -n "$head_errors" ] && [ -f "$head_errors/$stack.txt" ]; then failed="this branch"; fi
  if [ -n "$base_errors" ] && [ -f "$base_errors/$stack.txt" ]; then failed="${failed:+$failed and }${label}"; fi
  if [ -z "$part" ] && [ -z "$failed" ]; then continue; fi
  changed=1
  printf '%s\n' "$part" >> "$out"
  echo
  if [ -n "$failed" ]; then
    echo "### ${stack}: FAILED on ${failed}"
    for e in "$head_errors" "$base_errors"; do
      if [ -n "$e" ] && [ -f "$e/$stack.txt" ]; then
        echo '```'
        head -c 4000 "$e/$stack.txt"
        echo '```'
      fi
    done
  else
    echo "### ${stack}"
  fi
  if [ -n "$part" ]; then
    rollout=$(printf '%s\n' "$part" | grep -c '^+++ b/.*/rollout.json' || true)
    echo "$(printf '%s\n' "$part" | grep -c '^+++ ') files changed$([ "$rollout" -gt 0 ] && echo ', rollout.json among them (what re-runs)')"
    echo '```diff'
    printf '%s\n' "$part" | head -c "$limit"  || true  # head closes the pipe at the limit
    echo
    echo '```'
  fi
done < <(stacks | sort -u)
if [ "$changed" = 0 ]; then
  echo "No change to any stack's plan."
fi
