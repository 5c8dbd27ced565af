"""The readiness gate's report (scripts/guest/readiness.sh) as the `readiness` stack output.

The gate prints, under `--- readiness ---`, one line per check that passed:
`node <name> Ready <resource>=<found>/<expected>` and
`job <namespace>/<name> Succeeded`. It exits non-zero on the first check that
fails, so a report that parses is a cluster that converged.
"""

from __future__ import annotations

import re
from typing import Any

MARKER = "--- readiness ---"
_NODE = re.compile(r"^node (?P<node>\S+) Ready (?P<resource>\S+)=(?P<found>\d+)/(?P<expected>\d+)$")
_JOB = re.compile(r"^job (?P<job>\S+/\S+) (?P<status>Succeeded)$")


def parse_readiness_output(stdout: str) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    smoke: dict[str, str] | None = None
    if MARKER not in stdout:
        raise ValueError("the readiness gate printed no report")
    for line in stdout.split(MARKER, 1)[1].splitlines():
        line = line.strip()
        if m := _NODE.match(line):
            nodes[m["node"]] = {"ready": True, "allocatable": {m["resource"]: int(m["found"])}, "expected": {m["resource"]: int(m["expected"])}}
        elif m := _JOB.match(line):
            smoke = {"job": m["job"], "status": m["status"]}
        elif line:
            raise ValueError(f"unexpected readiness line: {line!r}")
    return {"nodes": nodes, "smokeTest": smoke}
