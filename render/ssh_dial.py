"""How long a guest phase's SSH connection keeps dialing: pulumi-command's retry rules, as arithmetic.

pulumi-command 1.2.1 (requirements.txt) dials with `dialWithRetry`
(provider/pkg/provider/remote/connection.go at tag v1.2.1): attempt `try`
(0, 1, ...) fails the dial for good once `try + 1 > dialErrorLimit`, so a
connection makes dialErrorLimit + 1 attempts with dialErrorLimit pauses between
them. The pauses are `retry.Until`'s defaults (pulumi/pulumi
sdk/go/common/util/retry/until.go at sdk/v3.224.0, the SDK that provider's
go.mod pins): 100 ms, times 1.5 after each pause (Go truncates the product to
whole nanoseconds), never more than 5 s. Each attempt is `ssh.Dial`, whose
`ClientConfig.Timeout` (perDialTimeout seconds) bounds the TCP connect only
(golang.org/x/crypto ssh/client.go at v0.48.0, the provider's pin): "Timeout is
the maximum amount of time for the TCP connection to establish". So the budget
lies between two numbers: every attempt refused at once (the port is closed)
costs the pauses alone; every attempt timing out costs the pauses plus
(limit + 1) * perDialTimeout. A guest that accepts TCP but stalls the SSH
handshake is not bounded by either.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_DELAY_NS = 100_000_000
RETRY_BACKOFF = 1.5
RETRY_MAX_DELAY_NS = 5_000_000_000


def pauses_s(dial_error_limit: int) -> float:
    """Seconds `retry.Until` sleeps between the dial_error_limit + 1 attempts, as Go computes them."""
    total, delay = 0, RETRY_DELAY_NS
    for _ in range(dial_error_limit):
        delay = min(delay, RETRY_MAX_DELAY_NS)
        total += delay
        delay = int(delay * RETRY_BACKOFF)
    return total / 1e9


@dataclass(frozen=True)
class DialBudget:
    dial_error_limit: int
    per_dial_timeout_s: int

    @property
    def attempts(self) -> int:
        return self.dial_error_limit + 1

    @property
    def refused_s(self) -> float:
        """Every attempt refused at once: the least time the connection keeps trying."""
        return pauses_s(self.dial_error_limit)

    @property
    def timed_out_s(self) -> float:
        """Every attempt running into perDialTimeout: the most time before the dial fails."""
        return self.refused_s + self.attempts * self.per_dial_timeout_s


def limit_for(min_seconds: float) -> int:
    """The smallest dialErrorLimit whose pauses alone (every dial refused) last min_seconds."""
    limit = 0
    while pauses_s(limit) < min_seconds:
        limit += 1
    return limit


BOOT_MIN_WAIT_S = 900
"""First contact and contact after a reboot keep dialing for at least 15 minutes, however fast each dial fails:
a guest with several large-BAR GPUs can take minutes to boot (docs/FIELD-FACTS.md, QEMU 8.2 and B200)."""

BOOT = DialBudget(dial_error_limit=limit_for(BOOT_MIN_WAIT_S), per_dial_timeout_s=5)
"""188 dial errors allowed, 5 s per TCP connect: 901 s (15.0 min) when every dial is refused, 1846 s (30.8 min)
when every dial times out; inside the 45-minute timeout of the long-running phases that wait for a boot."""

RUNNING = DialBudget(dial_error_limit=10, per_dial_timeout_s=10)
"""Any other phase: the guest is up; 11 attempts, 11 s when refused, 121 s when every dial times out
(pulumi-command's default dialErrorLimit, 10)."""


def budget(waits_for_boot: bool) -> DialBudget:
    return BOOT if waits_for_boot else RUNNING
