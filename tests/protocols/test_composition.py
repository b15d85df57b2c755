"""Distributed DP, central DP and malicious mode compose onto an aggregator by wrapping (12.4).

Each is a function that takes an aggregator and returns one; ``make_aggregator``'s
``distributed_dp=`` / ``central_dp=`` / ``privacy=`` keywords apply the same wrappers, for every
protocol, instead of the SecAgg factory sniffing its keywords and importing the DP layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import secureagg as sa
from secureagg.aggregators.dp import (
    CentralDPAggregator,
    DistributedDPAggregator,
    with_central_dp,
    with_distributed_dp,
    with_malicious_server,
)
from secureagg.dp import CentralDP, DistributedDP, PrivacyAccountant
from secureagg.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2] / "secureagg" / "aggregators"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_the_secagg_aggregator_does_not_import_the_dp_layer() -> None:
    """The circle secagg.py <-> dp.py is gone: dp.py wraps SecAgg, SecAgg knows nothing of DP."""
    assert "secureagg.aggregators.dp" not in _imports(ROOT / "secagg.py")
    assert "secureagg.aggregators.secagg" in _imports(ROOT / "dp.py")


def test_wrapping_and_the_keyword_build_the_same_distributed_dp_round() -> None:
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=6)
    base = sa.make_aggregator("secagg+", num_clients=6, clip=1.0)
    wrapped = with_distributed_dp(base, cfg, privacy=PrivacyAccountant())
    keyword = sa.make_aggregator("secagg+", num_clients=6, distributed_dp=cfg,
                                 privacy=PrivacyAccountant())
    assert isinstance(wrapped, DistributedDPAggregator)
    assert isinstance(keyword, DistributedDPAggregator)
    assert wrapped.parameters() == keyword.parameters()
    assert base.encoder.effective_scale != 1.0  # the wrapper rebuilt a copy; base is unchanged
    ups = [[np.full(6, 0.1)] for _ in range(6)]
    a = sa.simulate(wrapped, ups, seed=3).aggregate[0]
    b = sa.simulate(keyword, ups, seed=3).aggregate[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["plain", "ckks", "paillier"])
def test_distributed_dp_refuses_a_protocol_without_masking(name) -> None:
    kwargs = {"key_bits": 2048} if name == "paillier" else {}
    agg = sa.make_aggregator(name, num_clients=4, clip=1.0, **kwargs)
    cfg = DistributedDP(l2_clip=1.0, noise_multiplier=1.0, dimension=3)
    with pytest.raises(ConfigurationError, match="wraps a 'secagg' or 'secagg\\+' aggregator"):
        with_distributed_dp(agg, cfg)
    with pytest.raises(ConfigurationError, match="wraps a 'secagg' or 'secagg\\+' aggregator"):
        sa.make_aggregator(name, num_clients=4, clip=1.0, distributed_dp=cfg, **kwargs)


@pytest.mark.parametrize("name", ["plain", "secagg+"])
def test_central_dp_composes_the_same_way_for_every_protocol(name) -> None:
    cfg = CentralDP(l2_clip=1.0, noise_multiplier=1.0)
    keyword = sa.make_aggregator(name, num_clients=5, clip=1.0, central_dp=cfg)
    wrapped = with_central_dp(sa.make_aggregator(name, num_clients=5, clip=1.0), cfg)
    assert isinstance(keyword, CentralDPAggregator) and isinstance(wrapped, CentralDPAggregator)
    assert keyword.parameters() == wrapped.parameters()


def test_malicious_mode_is_a_wrapper_too() -> None:
    base = sa.make_aggregator("secagg+", num_clients=8, clip=1.0)
    agg = with_malicious_server(base)
    assert agg.params.threat == "malicious" and base.params.threat == "curious"
    assert "consistency" in agg.dropout_stages
    same = sa.make_aggregator("secagg+", num_clients=8, clip=1.0, threat="malicious")
    assert agg.parameters() == same.parameters()
    with pytest.raises(ConfigurationError, match="mode of masked secure aggregation"):
        with_malicious_server(sa.make_aggregator("plain", num_clients=4))


def test_composition_keywords_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        sa.make_aggregator("secagg", num_clients=4, clip=1.0,
                           distributed_dp=DistributedDP(l2_clip=1.0, noise_multiplier=1.0,
                                                        dimension=3),
                           central_dp=CentralDP(l2_clip=1.0, noise_multiplier=1.0))
    with pytest.raises(ConfigurationError, match="privacy= is the event sink"):
        sa.make_aggregator("secagg", num_clients=4, clip=1.0, privacy=PrivacyAccountant())
    with pytest.raises(ConfigurationError, match=r"must be a secureagg\.dp\.DistributedDP"):
        sa.make_aggregator("secagg", num_clients=4, clip=1.0, distributed_dp="yes")
