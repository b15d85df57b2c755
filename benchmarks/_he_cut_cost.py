"""Cost of one training step through the encrypted cut layer against the same layer in plaintext.

``encrypted_cut_cost(width, batch, in_features, repeats)`` drives :mod:`secureagg.split.he_cut`
party by party (``width`` = the layer's output features) and returns per-batch seconds for each
part (fastest of ``repeats``), the bytes each way, and the same layer trained the vanilla way
(float32 activations up, outputs down, G up, dL/dA down; numpy matmuls on both sides), all
measured in the same run. ``bench_split.py`` calls it; run it alone with
``python benchmarks/_he_cut_cost.py [--widths 64 256] [--in-features 64] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from secureagg.split.he_cut import HeCutClient, HeCutConfig, HeCutServer, choose_layout

_PARTS = (
    "client_encrypt",
    "server_forward",
    "client_decrypt",
    "client_backward",
    "server_backward",
    "client_decrypt_backward",
)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _encrypted_step(
    client: HeCutClient, server: HeCutServer, a: np.ndarray, g: np.ndarray
) -> tuple[dict[str, float], dict[str, int]]:
    t: dict[str, float] = {}
    t["client_encrypt"], req = _timed(lambda: client.forward(a))
    t["server_forward"], resp = _timed(lambda: server.forward(req))
    t["client_decrypt"], _ = _timed(lambda: client.finish_forward(resp))
    t["client_backward"], back = _timed(lambda: client.backward(g))
    t["server_backward"], reply = _timed(lambda: server.backward(back))
    t["client_decrypt_backward"], _ = _timed(lambda: client.finish_backward(reply))
    up = sum(map(len, req.ciphertexts)) + sum(map(len, back.gradient_ciphertexts))
    up += back.weight_gradient.astype(np.float32).nbytes + back.bias_gradient.nbytes // 2
    if back.plain_gradient is not None:
        up += back.plain_gradient.astype(np.float32).nbytes
    down = sum(map(len, resp.ciphertexts)) + sum(map(len, reply.ciphertexts))
    if reply.plain_input_gradient is not None:
        down += reply.plain_input_gradient.astype(np.float32).nbytes
    return t, {"bytes_up": up, "bytes_down": down}


def _plain_step(
    w: np.ndarray, b: np.ndarray, a: np.ndarray, g: np.ndarray
) -> tuple[float, dict[str, int]]:
    """Vanilla split learning of the same layer: float32 tensors both ways, numpy matmuls."""
    start = time.perf_counter()
    up_a = a.astype(np.float32).tobytes()  # client -> server
    a_srv = np.frombuffer(up_a, dtype=np.float32).reshape(a.shape)
    z = a_srv @ w + b
    down_z = z.tobytes()
    _ = np.frombuffer(down_z, dtype=np.float32)
    up_g = g.astype(np.float32).tobytes()
    g_srv = np.frombuffer(up_g, dtype=np.float32).reshape(g.shape)
    da = g_srv @ w.T
    w -= 0.01 * (a_srv.T @ g_srv)
    b -= 0.01 * g_srv.sum(axis=0)
    down_da = da.tobytes()
    _ = np.frombuffer(down_da, dtype=np.float32)
    seconds = time.perf_counter() - start
    return seconds, {"bytes_up": len(up_a) + len(up_g), "bytes_down": len(down_z) + len(down_da)}


def encrypted_cut_cost(
    width: int, batch: int, in_features: int, repeats: int, *, encrypt_gradient: bool = True
) -> dict[str, Any]:
    """Per-batch seconds by part and bytes each way, encrypted cut layer vs plaintext layer."""
    rng = np.random.default_rng(0)
    cfg = HeCutConfig(
        in_features=in_features,
        out_features=width,
        batch_size=batch,
        encrypt_gradient=encrypt_gradient,
    )
    w0 = rng.normal(0, 1.0 / np.sqrt(in_features), (in_features, width))
    b0 = np.zeros(width)
    client = HeCutClient(cfg)
    server = HeCutServer(cfg, weight=w0, bias=b0, learning_rate=0.01)
    server.accept_setup(client.setup())
    a = rng.uniform(-1, 1, (batch, in_features))
    g = rng.normal(0, 0.01, (batch, width))
    best: dict[str, float] = {}
    sizes: dict[str, int] = {}
    plain_best = float("inf")
    plain_sizes: dict[str, int] = {}
    wp, bp = w0.astype(np.float32), b0.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):  # interleaved: plaintext and encrypted under the same load
            for _ in range(20):
                s, plain_sizes = _plain_step(wp, bp, a, g)
                plain_best = min(plain_best, s)
            times, sizes = _encrypted_step(client, server, a, g)
            for part, sec in times.items():
                best[part] = min(best.get(part, float("inf")), sec)
    total = sum(best[p] for p in _PARTS)
    fwd = choose_layout(batch, in_features + 1, width, 2048)
    bwd = choose_layout(batch, width, in_features, 2048)
    return {
        "width": width,
        "batch": batch,
        "in_features": in_features,
        "encrypt_gradient": encrypt_gradient,
        "repeats": repeats,
        "encrypted": {
            "seconds": {p: best[p] for p in _PARTS},
            "seconds_total": total,
            **sizes,
            "layout_forward": {
                "groups": fwd.groups,
                "ciphertexts_up": fwd.groups * fwd.inputs_per_group,
                "ciphertexts_down": fwd.groups * fwd.outputs_per_group,
            },
            "layout_backward": {
                "groups": bwd.groups,
                "ciphertexts_up": bwd.groups * bwd.inputs_per_group,
                "ciphertexts_down": bwd.groups * bwd.outputs_per_group,
            },
        },
        "plaintext": {"seconds_total": plain_best, **plain_sizes},
        "ratio_seconds": total / plain_best,
        "ratio_bytes": (sizes["bytes_up"] + sizes["bytes_down"])
        / (plain_sizes["bytes_up"] + plain_sizes["bytes_down"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--in-features", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plain-gradient", action="store_true")
    args = parser.parse_args()
    results = [
        encrypted_cut_cost(
            w, args.batch, args.in_features, args.repeats, encrypt_gradient=not args.plain_gradient
        )
        for w in args.widths
    ]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
