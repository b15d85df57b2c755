"""A network model: a measured round's compute, bytes and stages as an estimated deployed time.

``secureagg bench --network up=20Mbit/s,down=100Mbit/s,latency=40ms,server=1Gbit/s`` adds, to
every measured configuration, an **estimate from a model** (never a measurement) of the round's
wall time if its parties were on separate machines joined by links of that speed:

* every stage is one round trip: the server's messages of the stage reach the clients, the
  clients compute and reply, the server computes;
* per stage: ``2 x latency`` + the busiest client's download at ``down`` + the slowest client's
  compute + the busiest client's upload at ``up`` + the server's traffic of the stage (the larger
  of what it sends and receives, all clients together) at ``server`` + the server's and the HE
  key holder's compute + the key holder's traffic at ``up``/``down``;
* before the stages, the round spec (public parameters, the CKKS public context) reaches the
  clients: one latency + its bytes at ``down``;
* no overlap of compute and transfer, no congestion beyond the server's link, no loss or
  retransmission, no TLS or framing overhead: a model to compare protocols by, not a forecast.

The compute figures are the medians measured in this process; the bytes are exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secureagg.errors import ConfigurationError

__all__ = ["MODEL_TEXT", "NetworkModel", "parse_network"]

MODEL_TEXT = (
    "MODEL, not a measurement: per stage 2 x latency + busiest client's download/up-link + "
    "slowest client's compute + busiest client's upload + server traffic / server link + server "
    "and key-holder compute (+ the key holder's transfers); plus the round spec's download. No "
    "overlap, congestion, loss or TLS overhead."
)

_RATE_UNITS = {
    "bit/s": 1.0, "kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9,
    "b/s": 8.0, "kb/s": 8e3, "mb/s": 8e6, "gb/s": 8e9,
}  # fmt: skip
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


@dataclass(frozen=True)
class NetworkModel:
    """Link speeds in bits per second, latency (one way) in seconds."""

    client_up_bps: float
    client_down_bps: float
    latency_s: float
    server_bps: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_up_bits_per_second": self.client_up_bps,
            "client_down_bits_per_second": self.client_down_bps,
            "latency_seconds": self.latency_s,
            "server_bits_per_second": self.server_bps,
            "model": MODEL_TEXT,
        }

    def round_seconds(
        self, stages: Mapping[str, Mapping[str, Any]], figures: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The modelled round time from a measured entry's ``stages`` and ``figures`` (medians)."""

        def med(row: Mapping[str, Any], key: str) -> float:
            value = row.get(key, 0.0)
            return float(value["median"]) if isinstance(value, Mapping) else float(value)

        per_stage: dict[str, dict[str, float]] = {}
        total = self.latency_s + 8 * med(figures, "spec_bytes") / self.client_down_bps
        for stage, row in stages.items():
            transfer = (
                8 * med(row, "client_bytes_down_max") / self.client_down_bps
                + 8 * med(row, "client_bytes_up_max") / self.client_up_bps
                + 8 * max(med(row, "server_bytes_in"), med(row, "server_bytes_out"))
                / self.server_bps
                + 8 * med(row, "key_holder_bytes_down") / self.client_down_bps
                + 8 * med(row, "key_holder_bytes_up") / self.client_up_bps
            )
            compute = (
                med(row, "client_seconds_max") + med(row, "server_seconds")
                + med(row, "helper_seconds")
            )
            seconds = 2 * self.latency_s + transfer + compute
            per_stage[stage] = {
                "seconds": seconds,
                "transfer_seconds": transfer,
                "compute_seconds": compute,
                "latency_seconds": 2 * self.latency_s,
            }
            total += seconds
        return {"seconds": total, "stages": per_stage, "model": MODEL_TEXT}


def _rate(text: str, key: str, problems: list[str]) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z/]+)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _RATE_UNITS:
        problems.append(
            f"--network {key}={text!r}: expected a rate such as 20Mbit/s, 1Gbit/s or 5MB/s"
        )
        return math.nan
    value = float(m.group(1)) * _RATE_UNITS[unit]
    if not (math.isfinite(value) and value > 0):
        problems.append(f"--network {key}={text!r}: the rate must be positive")
    return value


def _time(text: str, key: str, problems: list[str]) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|ms|us)\s*", text)
    if m is None:
        problems.append(f"--network {key}={text!r}: expected a time such as 40ms or 0.1s")
        return math.nan
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def parse_network(text: str) -> NetworkModel:
    """``up=RATE,down=RATE,latency=TIME[,server=RATE]`` (or ``bandwidth=RATE`` for up = down).

    Rates: ``bit/s``, ``kbit/s``, ``Mbit/s``, ``Gbit/s`` (or bytes: ``B/s``, ``kB/s``, ``MB/s``,
    ``GB/s``); times: ``s``, ``ms``, ``us``. The server's link defaults to 1 Gbit/s. Raises
    :class:`ConfigurationError` listing every problem."""
    problems: list[str] = []
    fields: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("up", "down", "bandwidth", "latency", "server"):
            problems.append(
                f"--network: {part.strip()!r} is not one of up=, down=, bandwidth=, latency=, "
                "server="
            )
            continue
        fields[key] = value
    if "bandwidth" in fields:
        fields.setdefault("up", fields["bandwidth"])
        fields.setdefault("down", fields["bandwidth"])
    for needed in ("up", "down", "latency"):
        if needed not in fields and not problems:
            problems.append(
                f"--network needs {needed}= (e.g. up=20Mbit/s,down=100Mbit/s,latency=40ms)"
            )
    if problems:
        raise ConfigurationError(problems)
    model = NetworkModel(
        client_up_bps=_rate(fields["up"], "up", problems),
        client_down_bps=_rate(fields["down"], "down", problems),
        latency_s=_time(fields["latency"], "latency", problems),
        server_bps=_rate(fields.get("server", "1Gbit/s"), "server", problems),
    )
    if problems:
        raise ConfigurationError(problems)
    return model
