"""What a simulated round will cost, estimated before it runs, and the limits it must fit.

``secureagg simulate`` (and ``demo --selftest``) hold every client's update and every client's
message of a stage in one process, so memory grows with ``clients * dim`` and a mistyped
``--dim 10000000000`` would allocate until the machine gives up. :func:`estimate_round` predicts
the peak memory (bytes) and the time (seconds) of one round from the aggregator's public
parameters (:meth:`~secureagg.protocols.base.RoundFactory.parameters`), the number of clients,
the values per client and the dropout fraction; :func:`limit_problems` compares an estimate with
the limits, so the command refuses, with the estimate in the message, what cannot fit.

The model (units: bytes and seconds; per client, per value unless stated):

* memory: the driver's test data (8 B per value, float64), the client's working copy (8 B), the
  client's message ``wire`` bytes (``plain`` 8 B per value; ``secagg``/``secagg+`` ``bits/8``;
  CKKS and Paillier ``ceil(dim / values_per_ciphertext) * ciphertext_bytes`` - the ciphertext
  expansion) times a factor for the copies alive at once (2 for masked and plain messages: the
  encoded bytes in flight and the decoded copy; 1.25 for HE, whose ciphertexts are decoded one at
  a time), the server's running sum, result and reference (4 x 8 B per value, once), per pair of
  SecAgg neighbours 2 KiB (keys, encrypted shares), the CKKS public context per client, and a
  fixed 64 MiB; the total has a 10 % margin. Measured on x86-64 (numpy 2, TenSEAL 0.3) the
  estimate was 1.5-2x the peak resident memory the round added for rounds of 150 MiB and more,
  up to 3.3x for many clients with few values (and far more for tiny rounds, where the fixed
  allowance dominates); never below it. A run refused near the limit may still fit: raise
  ``--max-memory`` knowingly.
* time: 1e-7 s per value per client (quantize, encode, codec, sum), SecAgg 3e-9 s per mask value
  (``degree + 1`` masks per client, one per (dropped client, neighbour) pair at the server) and
  ``1e-4 + 1.5e-5 * threshold`` s per pair of neighbours (key agreement, Shamir sharing, share
  encryption, signatures), ``3e-6 * n^2`` s for the survivor lists; CKKS 1.5e-6 s per slot;
  Paillier 0.06 s per ciphertext per client (3072-bit keys), plus 1 s. On a 2-core x86-64
  machine shared with other jobs the estimate was 1.6-8x the measured time: an upper estimate
  on similar hardware, not a promise (raise ``--max-seconds`` on a slower one).

>>> est = estimate_round({"protocol": "plain"}, num_clients=10, dim=1000)
>>> 64 * 2**20 < est.peak_bytes < 80 * 2**20, est.seconds < 5
(True, True)
>>> limit_problems(est, max_bytes=2**20, max_seconds=None)[0].split(";")[0]
'this run needs an estimated 70.8 MiB of memory, over the limit of 1.0 MiB (--max-memory)'
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secureagg.errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "Limits",
    "RoundEstimate",
    "add_limit_arguments",
    "available_memory",
    "default_memory_limit",
    "estimate_round",
    "format_bytes",
    "format_seconds",
    "limit_problems",
    "limits_from_args",
    "parse_limit",
    "parse_size",
]

#: the default time limit of one simulated round (``--max-seconds``)
DEFAULT_MAX_SECONDS = 3600.0
#: the share of the available memory a round may use by default (``--max-memory``)
MEMORY_SHARE = 0.9

_FIXED_BYTES = 64 * 2**20
_PAIR_BYTES = 2048
_SECONDS_FIXED = 1.0
_SECONDS_PER_VALUE = 1e-7
_SECONDS_PER_MASK_VALUE = 3e-9
_SECONDS_PER_PAIR = 1e-4
_SECONDS_PER_PAIR_THRESHOLD = 1.5e-5
_SECONDS_PER_CLIENT_SQUARED = 3e-6
_SECONDS_PER_CKKS_SLOT = 1.5e-6
_SECONDS_PER_PAILLIER_CIPHERTEXT = 0.06
_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SIZE_RE = re.compile(r"([0-9]*\.?[0-9]+(?:E[+-]?[0-9]+)?)([KMGTP]?)(?:I?B)?")


@dataclass(frozen=True)
class RoundEstimate:
    """Predicted peak memory (bytes) and duration (seconds) of one simulated round."""

    protocol: str
    num_clients: int
    dim: int
    peak_bytes: int
    seconds: float
    wire_bytes_per_client: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``config.json``)."""
        return {
            "peak_bytes": self.peak_bytes,
            "seconds": self.seconds,
            "wire_bytes_per_client": self.wire_bytes_per_client,
            "model": "secureagg.cli.estimate (upper estimate on a 2-core x86-64 machine)",
        }

    def describe(self) -> str:
        return (
            f"{format_bytes(self.peak_bytes)} of memory and {format_seconds(self.seconds)} "
            f"({self.protocol}, {self.num_clients:,} clients x {self.dim:,} values)"
        )


def _int(parameters: Mapping[str, Any], key: str, default: int) -> int:
    value = parameters.get(key)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else default


def _wire_bytes(parameters: Mapping[str, Any], protocol: str, dim: int) -> int:
    """Bytes of one client's update message (the aggregator's public parameters)."""
    per_ciphertext = _int(parameters, "values_per_ciphertext", 0)
    ciphertext_bytes = _int(parameters, "ciphertext_bytes", 0)
    if per_ciphertext > 0 and ciphertext_bytes > 0:
        return -(-dim // per_ciphertext) * ciphertext_bytes
    if protocol in ("secagg", "secagg+"):
        return dim * max(1, _int(parameters, "bits", 32) // 8)
    return dim * 8


def estimate_round(
    parameters: Mapping[str, Any], *, num_clients: int, dim: int, dropout: float = 0.0
) -> RoundEstimate:
    """Upper estimate of one simulated round: ``parameters`` are ``agg.parameters()``.

    Exact integer arithmetic throughout (a huge ``dim`` gives a huge estimate, never an
    overflow); ``dropout`` is the fraction of clients that drop out (SecAgg pays for their
    masks)."""
    protocol = str(parameters.get("protocol", ""))
    n, d = int(num_clients), int(dim)
    wire = _wire_bytes(parameters, protocol, d)
    he = _int(parameters, "values_per_ciphertext", 0) > 0
    masked = protocol in ("secagg", "secagg+")
    degree = min(_int(parameters, "degree", n - 1), max(n - 1, 0)) if masked else 0
    threshold = _int(parameters, "threshold", 0) if masked else 0
    pairs = n * degree

    copies_num, copies_den = (5, 4) if he else (2, 1)
    memory = (
        _FIXED_BYTES
        + n * (16 * d + wire * copies_num // copies_den)
        + 32 * d
        + pairs * _PAIR_BYTES
        + (16 * n * n if masked else 0)
        + n * _int(parameters, "public_context_bytes_estimate", 0)
    )
    peak = memory * 11 // 10  # a 10 % margin, in exact integers

    seconds = _SECONDS_FIXED + _SECONDS_PER_VALUE * float(n) * float(d)
    if masked:
        dropped = math.ceil(max(0.0, min(1.0, float(dropout))) * n)
        mask_values = float(n) * (degree + 1) * d + float(dropped) * degree * d
        seconds += _SECONDS_PER_MASK_VALUE * mask_values
        seconds += pairs * (_SECONDS_PER_PAIR + _SECONDS_PER_PAIR_THRESHOLD * threshold)
        seconds += _SECONDS_PER_CLIENT_SQUARED * float(n) * n
    per_ciphertext = _int(parameters, "values_per_ciphertext", 0)
    if protocol == "ckks" and per_ciphertext > 0:
        seconds += _SECONDS_PER_CKKS_SLOT * float(n) * (-(-d // per_ciphertext)) * per_ciphertext
    if protocol == "paillier" and per_ciphertext > 0:
        seconds += _SECONDS_PER_PAILLIER_CIPHERTEXT * float(n) * (-(-d // per_ciphertext))
    return RoundEstimate(
        protocol=protocol or "?",
        num_clients=n,
        dim=d,
        peak_bytes=peak,
        seconds=seconds,
        wire_bytes_per_client=wire,
    )


_CGROUP_FILES = (
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
    (
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
        "/sys/fs/cgroup/memory/memory.usage_in_bytes",
    ),
)


def _cgroup_headroom() -> int | None:
    """What a container's memory limit still allows (None: no limit found)."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            with open(limit_file, encoding="ascii") as fh:
                text = fh.read().strip()
            if text == "max":
                continue
            with open(usage_file, encoding="ascii") as fh:
                usage = int(fh.read().strip())
            limit = int(text)
        except (OSError, ValueError):
            continue
        if 0 < limit < 1 << 60:  # v1 reports "no limit" as a huge number
            return max(limit - usage, 0)
    return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``MemAvailable`` (Linux), else the free physical
    pages, lowered to a container's (cgroup) limit and to the address-space limit
    (``ulimit -v``) where one is set; None if unknown."""
    found: int | None = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            found = None
    headroom = _cgroup_headroom()
    if headroom is not None:
        found = headroom if found is None else min(found, headroom)
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            found = soft if found is None else min(found, soft)
    except (ImportError, OSError, ValueError):
        pass
    return None if found is None else max(found, 0)


def default_memory_limit() -> int | None:
    """The default ``--max-memory``: 90 % of :func:`available_memory` (None if unknown)."""
    available = available_memory()
    return None if available is None else int(available * MEMORY_SHARE)


def parse_size(text: str) -> int:
    """``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (binary units: K = 1024).

    >>> parse_size("8G"), parse_size("512MiB"), parse_size("1000")
    (8589934592, 536870912, 1000)
    """
    match = _SIZE_RE.fullmatch(str(text).strip().upper().replace(" ", ""))
    if match is None:
        raise ConfigurationError(
            f"expected a size such as 8G, 512M or 1000000 (bytes), got {text!r}"
        )
    value, unit = float(match.group(1)), match.group(2)
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"a size must be a positive number of bytes, got {text!r}")
    size = int(value * _SIZE_UNITS[unit])
    if size < 1:
        raise ConfigurationError(f"a size must be at least 1 byte, got {text!r}")
    return size


def parse_limit(text: str, *, option: str, size: bool) -> float | None:
    """An option's limit: ``"none"`` (no limit), a size (``size=True``) or seconds > 0."""
    if str(text).strip().lower() == "none":
        return None
    try:
        if size:
            return float(parse_size(text))
        value = float(text)
    except (ConfigurationError, ValueError) as exc:
        detail = exc.problems[0] if isinstance(exc, ConfigurationError) else f"got {text!r}"
        kind = "a size such as 8G or 512M" if size else "a number of seconds"
        raise ConfigurationError(f"{option} must be {kind} or 'none': {detail}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{option} must be a positive number of seconds or 'none', "
                                 f"got {text!r}")
    return value


def format_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:,.0f} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_seconds(seconds: float) -> str:
    """``5400`` -> ``'1.5 h'``."""
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:,.1f} h"
    return f"{seconds / 86400:,.1f} days"


def limit_problems(
    estimate: RoundEstimate,
    *,
    max_bytes: float | None,
    max_seconds: float | None,
    lower: str = "--dim or --clients",
    limit_source: str = "--max-memory",
) -> list[str]:
    """One message per limit the estimate exceeds (empty: it fits)."""
    problems = []
    if max_bytes is not None and estimate.peak_bytes > max_bytes:
        problems.append(
            f"this run needs an estimated {format_bytes(estimate.peak_bytes)} of memory, over "
            f"the limit of {format_bytes(max_bytes)} ({limit_source}); lower {lower}, or raise "
            f"--max-memory if the memory is there ({estimate.num_clients:,} clients x "
            f"{estimate.dim:,} values, {estimate.protocol})"
        )
    if max_seconds is not None and estimate.seconds > max_seconds:
        problems.append(
            f"this run would take an estimated {format_seconds(estimate.seconds)}, over the "
            f"limit of {format_seconds(max_seconds)} (--max-seconds); lower {lower}, or raise "
            f"--max-seconds ({estimate.num_clients:,} clients x {estimate.dim:,} values, "
            f"{estimate.protocol})"
        )
    return problems


@dataclass(frozen=True)
class Limits:
    """What a run may use: bytes (None: no limit) and seconds (None: no limit)."""

    max_bytes: float | None
    max_seconds: float | None
    memory_source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_bytes": self.max_bytes,
            "max_seconds": self.max_seconds,
            "memory_limit_from": self.memory_source,
        }

    def problems(self, estimate: RoundEstimate, *, lower: str) -> list[str]:
        return limit_problems(
            estimate,
            max_bytes=self.max_bytes,
            max_seconds=self.max_seconds,
            lower=lower,
            limit_source=self.memory_source,
        )


def add_limit_arguments(parser: argparse.ArgumentParser, *, note: str = "") -> None:
    """``--max-memory`` and ``--max-seconds`` on a command that runs a simulated round."""
    parser.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help=f"{note}refuse to start a run whose estimated peak memory exceeds SIZE (8G, 512M, "
        f"bytes, or 'none'; default {int(MEMORY_SHARE * 100)}%% of the available memory)",
    )
    parser.add_argument(
        "--max-seconds",
        default=None,
        metavar="S",
        help=f"{note}refuse to start a run whose estimated duration exceeds S seconds ('none': no "
        f"limit; default {DEFAULT_MAX_SECONDS:.0f})",
    )


def limits_from_args(args: argparse.Namespace, problems: list[str]) -> Limits:
    """Parse ``--max-memory``/``--max-seconds``; each bad value is appended to ``problems``."""
    max_bytes: float | None = None
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    source = "--max-memory"
    text = getattr(args, "max_memory", None)
    if text is None:
        limit = default_memory_limit()
        max_bytes = None if limit is None else float(limit)
        source = f"{int(MEMORY_SHARE * 100)}% of the available memory; --max-memory"
    else:
        try:
            max_bytes = parse_limit(text, option="--max-memory", size=True)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
    text = getattr(args, "max_seconds", None)
    if text is not None:
        try:
            max_seconds = parse_limit(text, option="--max-seconds", size=False)
        except ConfigurationError as exc:
            problems.extend(exc.problems)
    return Limits(max_bytes=max_bytes, max_seconds=max_seconds, memory_source=source)
