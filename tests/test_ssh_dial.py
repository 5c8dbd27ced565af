"""The SSH dial budget of the guest phases, from pulumi-command 1.2.1's retry rules (render/ssh_dial.py)."""

from __future__ import annotations

import re

import pytest

from render import ssh_dial
from render.ssh_dial import BOOT, RUNNING, DialBudget, limit_for, pauses_s
from tests.conftest import ROOT


def test_pauses_follow_retry_until_defaults():
    """retry.Until (pulumi sdk/v3.224.0): 100 ms, x1.5 per pause, at most 5 s; one pause fewer than attempts."""
    assert pauses_s(0) == 0
    assert pauses_s(1) == pytest.approx(0.1)
    assert pauses_s(3) == pytest.approx(0.1 + 0.15 + 0.225)
    assert pauses_s(10) == pytest.approx(sum(0.1 * 1.5 ** k for k in range(10)), abs=1e-6)  # last uncapped: 3.84 s
    assert pauses_s(11) - pauses_s(10) == pytest.approx(5.0), "the 11th pause would be 5.77 s: capped"
    assert pauses_s(50) - pauses_s(49) == pytest.approx(5.0)


def test_the_old_settings_give_what_was_measured_against_the_real_provider():
    """Issue 22: dialErrorLimit 90 with perDialTimeout 10 ran about 7 minutes on a refusing port and up to
    about 22 minutes when each dial timed out, not the ~15 minutes the comment claimed."""
    old = DialBudget(dial_error_limit=90, per_dial_timeout_s=10)
    assert old.attempts == 91
    assert round(old.refused_s / 60) == 7
    assert round(old.timed_out_s / 60) == 22


def test_a_boot_is_waited_for_at_least_15_minutes_and_at_most_31():
    assert BOOT.dial_error_limit == limit_for(ssh_dial.BOOT_MIN_WAIT_S) == 188
    assert BOOT.refused_s >= 900 > pauses_s(BOOT.dial_error_limit - 1)
    assert (round(BOOT.refused_s), round(BOOT.timed_out_s)) == (901, 1846)
    assert BOOT.timed_out_s < 45 * 60, "within the 45-minute timeout of the long-running phases that wait for a boot"
    assert (round(RUNNING.refused_s), round(RUNNING.timed_out_s)) == (11, 121)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} minutes"


def test_the_docs_state_the_computed_budget():
    operations = (ROOT / "docs/OPERATIONS.md").read_text()
    section = operations[operations.index("## Waiting for the guest"):]
    section = section[:section.index("\n## ", 3)]
    for text in (f"{BOOT.dial_error_limit}", f"{BOOT.per_dial_timeout_s} s", _minutes(BOOT.refused_s), _minutes(BOOT.timed_out_s),
                 f"{round(RUNNING.refused_s)} s", f"{round(RUNNING.timed_out_s)} s"):
        assert text in section, text
    comment = (ROOT / "components/guest_command.py").read_text()
    assert _minutes(BOOT.refused_s).split()[0] in comment and _minutes(BOOT.timed_out_s).split()[0] in comment
    assert not re.search(r"~\s*15 minutes", comment)
