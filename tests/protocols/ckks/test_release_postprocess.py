"""The CKKS key holder's release post-processing hook (``release_postprocess``): applied by the
key holder to the checked sum before anything is released, invisible when unused (same spec,
options and messages), its output checked, its randomness seeded only in seeded runs."""

from __future__ import annotations

import numpy as np
import pytest

import secureagg as sa
from secureagg.crypto import prg
from secureagg.errors import ConfigurationError
from secureagg.protocols.base import KEY_HOLDER
from tests.he.keys import ckks_key

N, D = 5, 40


class Recorder:
    """A post-processing that remembers what it saw and shifts every value by ``shift``."""

    def __init__(self, shift: float = 1000.0, *, length: int | None = None) -> None:
        self.shift = shift
        self.length = length
        self.calls: list[tuple[np.ndarray, int, prg.Keystream | None]] = []

    def __call__(self, values, contributors, stream):
        self.calls.append((values.copy(), contributors, stream))
        out = values + self.shift
        if self.length is not None:
            out = out[: self.length]
        return out, 7.0


def _updates(n: int = N, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.uniform(-1, 1, D)] for _ in range(n)]


def _spec(agg):
    key = ckks_key()
    return agg.round_spec(shapes=[(D,)], weighted=False, session_id=b"S" * 16, round_id=0,
                          public_keys={KEY_HOLDER: key.public_material()})


def test_unused_hook_changes_no_option_spec_or_parameter() -> None:
    plain = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key())
    hooked = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key(),
                                release_postprocess=Recorder())
    assert "release_postprocess" not in plain.spec_options()
    assert plain.spec_options() == hooked.spec_options()  # the hook is not public data
    assert _spec(plain).digest == _spec(hooked).digest
    assert "key_holder_postprocess" not in plain.parameters()
    extra = set(hooked.parameters()) - set(plain.parameters())
    assert extra == {"key_holder_postprocess"}


def test_the_key_holder_post_processes_the_checked_sum_before_release() -> None:
    hook = Recorder()
    agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key(),
                             release_postprocess=hook)
    ups = _updates()
    with pytest.warns(sa.transport.SeededRunWarning):
        res = sa.simulate(agg, ups, dropouts={1: "upload"}, seed=3)
    assert res.survivors == (0, 2, 3, 4)
    assert len(hook.calls) == 1
    seen, contributors, stream = hook.calls[0]
    assert contributors == 4 and seen.shape == (D,)
    plain_sum = sum(ups[i][0] for i in res.survivors)
    # the hook saw the decrypted (flooded) sum, within the CKKS bound ...
    assert np.max(np.abs(seen - plain_sum)) <= agg.error_bound(survivors=4)
    # ... and the server received exactly its output, with the noise std it stated
    np.testing.assert_array_equal(res.aggregate[0], seen + 1000.0)
    assert res.details["flooding_noise_std"] == 7.0
    assert isinstance(stream, prg.Keystream)  # seeded run: its own reproducible stream


def test_the_post_processing_stream_is_seeded_only_in_a_seeded_run() -> None:
    draws = []
    for _ in range(2):
        hook = Recorder()
        agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, release_postprocess=hook)
        with pytest.warns(sa.transport.SeededRunWarning):
            sa.simulate(agg, _updates(), seed=11)
        stream = hook.calls[0][2]
        assert stream is not None
        draws.append(stream.read(16))
    assert draws[0] == draws[1]  # same seed, same stream
    hook = Recorder()
    agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, release_postprocess=hook)
    sa.simulate(agg, _updates())
    assert hook.calls[0][2] is None  # unseeded: the hook draws from a fresh CSPRNG


def test_a_malformed_post_processing_releases_nothing() -> None:
    agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key(),
                             release_postprocess=Recorder(length=D - 1))
    with pytest.raises(ConfigurationError, match="post-processing must return"):
        sa.simulate(agg, _updates())


def test_a_non_callable_hook_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="release_postprocess"):
        sa.make_aggregator("ckks", num_clients=N, clip=1.0, release_postprocess=3)


def test_a_restored_key_holder_keeps_the_hook() -> None:
    hook = Recorder()
    agg = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key(),
                             release_postprocess=hook)
    spec = _spec(agg)
    holder = agg.helpers_from_spec(spec, {KEY_HOLDER: ckks_key()})[KEY_HOLDER]
    assert holder.postprocess is hook
    restored = agg.restore_helper(spec, holder.export_state(), {KEY_HOLDER: ckks_key()})
    assert restored.postprocess is hook
    plain = sa.make_aggregator("ckks", num_clients=N, clip=1.0, key=ckks_key())
    assert plain.helpers_from_spec(_spec(plain), {KEY_HOLDER: ckks_key()})[
        KEY_HOLDER].postprocess is None
