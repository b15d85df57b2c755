"""Known-answer vectors of one split-learning step (``protocols/split/vectors/step.json``).

The expected activations, loss, cut gradients and updated weights are computed in closed form with
numpy (softmax cross-entropy, SGD) by :func:`expected_step`, independently of torch; the test runs
the real :class:`SplitClient`/:class:`SplitServer` (vanilla and U-shaped) through the codec and
compares. ``SECUREAGG_REGENERATE_VECTORS=1`` rewrites the file from the closed form.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.vectors import load_vectors, regenerate, write_vectors

torch = pytest.importorskip("torch")
from secureagg.split import SplitClient, SplitServer  # noqa: E402
from secureagg.transport import decode, encode  # noqa: E402
from tests.split.exchange import to_client, to_server  # noqa: E402

SID = bytes(range(16))


def softmax_ce(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    b = logits.shape[0]
    loss = float(-np.log(p[np.arange(b), labels]).mean())
    d = p.copy()
    d[np.arange(b), labels] -= 1.0
    return loss, d / b


def expected_step(v: dict[str, Any]) -> dict[str, Any]:
    x, w1, b1 = (np.array(v[k], dtype=np.float64) for k in ("inputs", "w1", "b1"))
    w2, b2 = np.array(v["w2"], dtype=np.float64), np.array(v["b2"], dtype=np.float64)
    labels, lr = np.array(v["labels"]), float(v["lr"])
    a = x @ w1.T + b1
    loss, dlogits = softmax_ce(a @ w2.T + b2, labels)
    grad_a = dlogits @ w2
    return {
        "activations": a.tolist(),
        "loss": loss,
        "cut_gradients": grad_a.tolist(),
        "w1_after": (w1 - lr * grad_a.T @ x).tolist(),
        "b1_after": (b1 - lr * grad_a.sum(0)).tolist(),
        "w2_after": (w2 - lr * dlogits.T @ a).tolist(),
        "b2_after": (b2 - lr * dlogits.sum(0)).tolist(),
    }


def linear(w: list[list[float]], b: list[float]) -> Any:
    layer = torch.nn.Linear(len(w[0]), len(w))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(b, dtype=torch.float32))
    return layer


INPUTS = {
    "inputs": [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75], [-0.5, 0.5, 0.125]],
    "w1": [[0.2, -0.1, 0.4], [0.3, 0.5, -0.2]],
    "b1": [0.1, -0.3],
    "w2": [[0.6, -0.4], [-0.2, 0.3], [0.05, 0.1]],
    "b2": [0.0, 0.1, -0.1],
    "labels": [2, 0, 1],
    "lr": 0.5,
}


@pytest.mark.skipif(not regenerate(), reason="set SECUREAGG_REGENERATE_VECTORS=1 to rewrite")
def test_regenerate_vectors() -> None:
    write_vectors(
        "split", "step",
        description="one vanilla split-learning step: bottom Linear(3,2), top Linear(2,3), mean "
        "softmax cross-entropy, SGD; expected values in closed form (numpy, float64)",
        generated_by="tests/split/test_vectors.py::expected_step",
        vectors=[{**INPUTS, "expected": expected_step(INPUTS)}],
    )


@pytest.mark.parametrize("topology", ["vanilla", "u-shaped"])
def test_one_step_matches_the_known_answer(topology: str) -> None:
    [v] = load_vectors("split", "step")
    recomputed = expected_step(v)  # the file agrees with the closed form
    for key, value in v["expected"].items():
        np.testing.assert_allclose(value, recomputed[key], rtol=1e-12, atol=1e-15)
    exp = v["expected"]
    bottom, top = linear(v["w1"], v["b1"]), linear(v["w2"], v["b2"])
    sgd = torch.optim.SGD
    x = torch.tensor(v["inputs"], dtype=torch.float32)
    labels = torch.tensor(v["labels"])
    if topology == "vanilla":
        client = SplitClient(bottom, sgd(bottom.parameters(), lr=v["lr"]), session_id=SID)
        server = SplitServer(top, sgd(top.parameters(), lr=v["lr"]), session_id=SID,
                             labels=labels)
        msg = decode(encode(client.forward(x, example_ids=torch.arange(3))))
    else:  # the same arithmetic with the top as the client's head and an identity middle
        middle = torch.nn.Identity()
        client = SplitClient(bottom, sgd(bottom.parameters(), lr=v["lr"]), session_id=SID,
                             head=top, head_optimizer=sgd(top.parameters(), lr=v["lr"]),
                             loss_fn=torch.nn.functional.cross_entropy)
        server = SplitServer(middle, sgd([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                             session_id=SID, topology="u-shaped")
        msg = decode(encode(client.forward(x, labels=labels)))
    np.testing.assert_allclose(np.asarray(msg.values).reshape(3, 2), exp["activations"],
                               rtol=1e-6, atol=1e-7)
    reply = decode(encode(to_server(server, msg)))
    if topology == "u-shaped":
        reply = decode(encode(to_server(server, decode(encode(to_client(client, reply))))))
    assert to_client(client, reply) is None
    loss = (server.losses if topology == "vanilla" else client.losses)[-1]
    np.testing.assert_allclose(np.asarray(reply.values).reshape(3, 2), exp["cut_gradients"],
                               rtol=1e-5, atol=1e-7)
    assert loss == pytest.approx(exp["loss"], rel=1e-6)
    for layer, w, b in ((bottom, "w1_after", "b1_after"), (top, "w2_after", "b2_after")):
        np.testing.assert_allclose(layer.weight.detach().numpy(), exp[w], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.bias.detach().numpy(), exp[b], rtol=1e-5, atol=1e-6)
