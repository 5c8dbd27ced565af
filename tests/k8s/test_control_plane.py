"""The control plane itself: the pinned release, ready on loopback, and stopped exactly (tests/support/control_plane.py)."""

from __future__ import annotations

import json
import os
import subprocess

from tests.support.control_plane import ControlPlane


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_serves_the_pinned_release_and_stops_exactly_what_it_started(control_plane_bin, tmp_path):
    bystander = subprocess.Popen(["sleep", "300"])  # a process the control plane did not start
    cp = ControlPlane(control_plane_bin, tmp_path / "cp")
    cp.work.mkdir()
    try:
        cp.start()
        version = json.loads(cp.kubectl("version", "-o", "json").stdout)
        assert version["serverVersion"]["gitVersion"] == "v1.36.5" and version["clientVersion"]["gitVersion"] == "v1.36.5"
        assert set(cp.procs) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        print(f"\nready in {cp.timings['ready']:.1f}s ({', '.join(f'{k} {v:.1f}s' for k, v in cp.timings.items())}); "
              f"RSS {sum(cp.rss_mb().values())} MB ({cp.rss_mb()})")
        pids = [p.pid for p in cp.procs.values()]
        assert all(_alive(pid) for pid in pids)
    finally:
        cp.stop()
    try:
        assert not [pid for pid in pids if _alive(pid)], "a control-plane process outlived stop()"
        assert _alive(bystander.pid), "stop() touched a process it did not start"
    finally:
        bystander.kill()
        bystander.wait()
