"""What the server receives is uniform modulo 2^k and uncorrelated with the client's input.

Includes the double-masking case: a client declared dropped whose masked input arrives late.
The server then knows the dropped client's pairwise masks (it reconstructed its mask key), and the
test removes them exactly as a curious server could - what remains must still be uniform,
because the self-mask b_u was never revealed.
"""

from __future__ import annotations

import numpy as np

import secureagg as sa
from secureagg.crypto import labels, prg
from secureagg.protocols.secagg import messages as m
from tests.protocols.secagg.driver import drive, make_setup

# Chi-square critical value for 255 degrees of freedom at p = 1e-6 (so a fixed-seed test that
# passes is not luck, and a constant or biased vector fails by orders of magnitude).
CHI2_255_CRIT = 370.0


def _chi2_bytes(values: np.ndarray) -> float:
    counts = np.bincount(values.view(np.uint8), minlength=256).astype(float)
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


def _top_byte_chi2(values: np.ndarray) -> float:
    top = (values >> np.uint32(24)).astype(np.int64)
    counts = np.bincount(top, minlength=256).astype(float)
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


def test_plaintext_encoding_is_not_uniform():
    """Control: the same statistic flags the unmasked encoding (the test has teeth)."""
    enc = sa.make_aggregator(
        "secagg", num_clients=5, clip=1.0, dropout_rate=0.0, corrupt_rate=0.0
    ).encoder
    x = np.full(4096, 0.25)
    assert _top_byte_chi2(enc.encode(x).values) > 100 * CHI2_255_CRIT


def test_masked_inputs_uniform_and_uncorrelated():
    n, d = 5, 4096
    agg = sa.make_aggregator("secagg", num_clients=n, clip=1.0, dropout_rate=0.0, corrupt_rate=0.0)
    rng = np.random.default_rng(3)
    corr = []
    for trial in range(4):
        updates = [[rng.uniform(-1, 1, size=d)] for _ in range(n)]
        run = drive(
            make_setup(agg, updates, session_id=bytes([trial]) * 16, seed=None),
            stages=("advertise", "share", "masked", "unmask"),
        )
        for _, u, msg in run.uplink:
            if isinstance(msg, m.MaskedInput):
                assert _top_byte_chi2(msg.values) < CHI2_255_CRIT
                assert _chi2_bytes(msg.values) < CHI2_255_CRIT
                corr.append(np.corrcoef(msg.values.astype(float), updates[u][0])[0, 1])
    # |r| for independent vectors of length 4096 is about 1/64; 0.08 is five sigma.
    assert max(abs(c) for c in corr) < 0.08


def test_late_masked_input_of_dropped_client_stays_hidden():
    n, d = 5, 4096
    agg = sa.make_aggregator("secagg", num_clients=n, clip=1.0, dropout_rate=0.0, corrupt_rate=0.0)
    x = np.full(d, 0.5)  # a constant input: any leak shows up immediately
    updates = [[x.copy()] for _ in range(n)]
    setup = make_setup(agg, updates, seed=None)
    late: dict[str, np.ndarray] = {}

    # Capture client 2's masked input but do not deliver it in time (declared dropped).
    server = setup.server
    original = server.receive

    def receive(sender, message):
        if sender == 2 and isinstance(message, m.MaskedInput):
            late["y"] = message.values.copy()
            return []
        return original(sender, message)

    server.receive = receive  # type: ignore[method-assign]
    drive(setup, stages=("advertise", "share", "masked", "unmask"))
    assert 2 not in server.result().survivor_ids
    y = late["y"]
    assert _top_byte_chi2(y) < CHI2_255_CRIT

    # The server reconstructed client 2's mask key. Strip every pairwise mask of client 2 the way
    # a curious server can: what remains is x + PRG(b_2), still uniform.
    ctx = server.ctx
    # (The server's unmask step checks that the key it reconstructed equals the advertised one,
    # so using client 2's own key pair here is exactly the server's knowledge.)
    mask_key = setup.clients[2]._mask_keys
    stripped = y.copy()
    for v in sorted(ctx.neighbours[2]):
        seed = ctx.pairwise_seed(mask_key, 2, server._keys[v][1], v)
        prg.add_mask(
            stripped, seed, label=labels.PAIRWISE_MASK, context=ctx.mask_context(), subtract=v > 2
        )
    # Sanity: removing the self-mask too (which the server never learns) reveals the input.
    unmasked = stripped.copy()
    prg.add_mask(
        unmasked,
        setup.clients[2]._self_mask_seed,
        label=labels.SELF_MASK,
        context=ctx.self_mask_context(2),
        subtract=True,
    )
    assert np.allclose(agg.encoder.decode(unmasked), x, atol=1 / agg.encoder.effective_scale)
    # ... but without b_2 the server's best view is uniform and uncorrelated with x.
    assert _top_byte_chi2(stripped) < CHI2_255_CRIT
    assert _chi2_bytes(stripped) < CHI2_255_CRIT
