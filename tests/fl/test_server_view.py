"""The server saw nothing in plaintext: computed from the bytes it received, not from flags.

For every message the server received we take its raw bytes and (1) search them for each client's
plaintext update (float32 and float64 encodings of any 8 consecutive values), and (2) correlate
every numeric view of the message - each array field after decoding, and the raw bytes read as
float32/float64/uint32/int32 at every alignment, over every window of the update's length - with
every client's update. The same detector flags every update in a ``"plain"`` run (its teeth).
Messages from the HE key holder carry the released aggregate, which the server is meant to learn:
they must be the weighted sum, and nothing else.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from secureagg.fl import FederatedRun, RoundRecord  # noqa: E402
from secureagg.transport import decode  # noqa: E402
from tests.fl.conftest import make_model, train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::secureagg.transport.SeededRunWarning")


def _windows_corr(view: np.ndarray, update: np.ndarray) -> float:
    """max |Pearson correlation| between ``update`` and every window of ``view``.

    Float views of random or structured bytes are heavy-tailed: huge exponents and NaN, or (for
    the 60-bit CKKS coefficients read as float64) values around 1e-200 that span hundreds of
    orders of magnitude. One dominant element then makes Pearson correlation equal the z-score of
    one coordinate of the update, which says nothing. A plaintext vector encoded as floats has
    modest values, so for float views only windows whose values are all finite, zero or between
    1e-20 and 1e3 in magnitude, and at least half nonzero, are considered. Integer views (where a
    fixed-point encoding would show) are taken whole.
    """
    d = update.size
    if view.size < d:
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        v = view.astype(np.float64)
    if view.dtype.kind == "f":
        mag = np.abs(np.nan_to_num(v, nan=np.inf))
        bad = ~np.isfinite(v) | (mag > 1e3) | ((mag < 1e-20) & (mag != 0.0))
        v = np.where(bad, 0.0, v)
        nbad = np.concatenate([[0], np.cumsum(bad)])
        nzero = np.concatenate([[0], np.cumsum(v == 0.0)])
        usable = ((nbad[d:] - nbad[:-d]) == 0) & ((nzero[d:] - nzero[:-d]) <= d // 2)
        if not usable.any():
            return 0.0
    else:
        usable = np.ones(v.size - d + 1, dtype=bool)
    u = (update - update.mean()) / (update.std() * d)
    windows = np.lib.stride_tricks.sliding_window_view(v, d)
    csum = np.concatenate([[0.0], np.cumsum(v)])
    csq = np.concatenate([[0.0], np.cumsum(v * v)])
    mean = (csum[d:] - csum[:-d]) / d
    std = np.sqrt(np.maximum((csq[d:] - csq[:-d]) / d - mean**2, 0.0))
    dots = windows @ u
    ok = usable & (std > 1e-9 * (1 + np.abs(mean)))
    if not ok.any():
        return 0.0
    return float(np.max(np.abs(dots[ok] / std[ok])))


def _views(raw: bytes) -> list[np.ndarray]:
    views: list[np.ndarray] = []
    message = decode(raw)
    for value in vars(message).values():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            views.append(value.ravel())
    for dtype in (np.float32, np.float64, np.uint32, np.int32):
        size = np.dtype(dtype).itemsize
        for offset in range(size):
            usable = (len(raw) - offset) // size * size
            if usable:
                views.append(np.frombuffer(raw, dtype=dtype, count=usable // size, offset=offset))
    return views


def leaks(raw: bytes, update: np.ndarray) -> list[str]:
    """Ways in which ``raw`` reveals ``update`` (empty list: none found)."""
    found = []
    for dtype in (np.float32, np.float64):
        values = update.astype(dtype)
        for start in range(0, values.size - 8, max(1, values.size // 16)):
            if values[start : start + 8].tobytes() in raw:
                found.append(f"{np.dtype(dtype).name} bytes of values {start}..{start + 7}")
                break
    threshold = 0.5  # plaintext gives 1.0; random bytes give < 0.3 at these sizes
    for view in _views(raw):
        corr = _windows_corr(view, update.astype(np.float64))
        if corr > threshold:
            found.append(f"correlation {corr:.3f} with a {view.dtype} view")
            break
    return found


def run_recorded(aggregator: str, loaders: list[Any]) -> RoundRecord:
    records: list[RoundRecord] = []
    FederatedRun(
        make_model(), train=train, client_loaders=loaders, aggregator=aggregator, rounds=1,
        seed=5, progress=False, keep_raw=True, on_round=records.append,
    ).run()
    [record] = records
    assert record.completed
    assert record.raw_uplink is not None and len(record.client_updates) == len(loaders)
    return record


def check_no_plaintext(record: RoundRecord) -> int:
    assert record.raw_uplink is not None
    checked = 0
    for line, raw in record.raw_uplink:
        if line["sender"] < 0:
            continue  # the key holder's release, checked by the HE test
        for client, update in record.client_updates.items():
            assert leaks(raw, update) == [], (line["kind"], line["sender"], client)
            checked += 1
    return checked


def test_detector_finds_every_update_in_a_plain_run(loaders: list[Any]) -> None:
    record = run_recorded("plain", loaders)
    assert record.raw_uplink is not None
    for line, raw in record.raw_uplink:
        own = record.client_updates[line["sender"]]
        assert leaks(raw, own), line  # the plaintext upload gives itself away


def test_secagg_plus_transcript_reveals_no_update(loaders: list[Any]) -> None:
    record = run_recorded("secagg+", loaders)
    kinds = {line["kind"] for line, _ in record.raw_uplink or []}
    assert "secagg/masked-input" in kinds
    assert check_no_plaintext(record) >= 4 * 5 * 5  # 4 stages x 5 senders x 5 updates


@pytest.mark.skipif(
    importlib.util.find_spec("tenseal") is None
    or importlib.util.find_spec("secureagg.aggregators.ckks") is None,
    reason="the ckks aggregator needs tenseal",
)
def test_ckks_transcript_reveals_no_update_and_releases_only_the_sum(
    loaders: list[Any],
) -> None:
    record = run_recorded("ckks", loaders)
    assert check_no_plaintext(record) == 5 * 5
    releases = [(line, raw) for line, raw in record.raw_uplink or [] if line["sender"] < 0]
    assert len(releases) == 1
    expected = sum(
        len(loaders[c].dataset) * u.astype(np.float64) for c, u in record.client_updates.items()
    )
    values = np.asarray(decode(releases[0][1]).values, dtype=np.float64)  # type: ignore[attr-defined]
    assert np.corrcoef(values[: expected.size], expected)[0, 1] > 0.999
