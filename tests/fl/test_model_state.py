"""The state-dict <-> flat-vector codec: shapes, dtypes, buffers, architecture checks."""

from __future__ import annotations

import numpy as np
import pytest

from secureagg.errors import ConfigurationError, InvalidInputError

torch = pytest.importorskip("torch")
from secureagg.fl.model_state import StateCodec  # noqa: E402


def bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
    )


def test_round_trip_keeps_names_shapes_dtypes_and_values() -> None:
    model = bn_model()
    model(torch.randn(8, 4))  # moves the running statistics away from their initial values
    codec = StateCodec.from_model(model)
    state = model.state_dict()
    flat = codec.flatten(state)
    assert flat.dtype == np.float32
    # 4*3+3 linear, 3+3 affine, 3+3 statistics, 3*2+2 linear; num_batches_tracked is not in it
    assert codec.size == 15 + 6 + 6 + 8 == flat.size
    back = codec.unflatten(flat, reference=state)
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype
        assert back[name].shape == tensor.shape
        assert torch.equal(back[name], tensor)


def test_buffers_are_explicit() -> None:
    model = bn_model()
    entries = {e.name: e for e in StateCodec.from_model(model).specs}
    assert entries["1.running_mean"].kind == "buffer"
    assert entries["1.running_mean"].aggregated
    assert entries["1.num_batches_tracked"].dtype == "int64"
    assert not entries["1.num_batches_tracked"].aggregated  # counters are never averaged
    assert entries["0.weight"].kind == "parameter"
    excluded = StateCodec.from_model(model, buffers="exclude")
    assert excluded.size == 15 + 6 + 8
    assert not {e.name: e for e in excluded.specs}["1.running_var"].aggregated


def test_apply_delta_changes_only_aggregated_entries() -> None:
    model = bn_model()
    codec = StateCodec.from_model(model, buffers="exclude")
    state = model.state_dict()
    delta = np.arange(codec.size, dtype=np.float64) / 100
    new = codec.apply_delta(state, delta, scale=0.5)
    assert torch.equal(new["1.running_var"], state["1.running_var"])
    assert torch.equal(new["1.num_batches_tracked"], state["1.num_batches_tracked"])
    got = codec.flatten(new).astype(np.float64) - codec.flatten(state).astype(np.float64)
    np.testing.assert_allclose(got, 0.5 * delta, atol=1e-6)
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        codec.apply_delta(state, np.full(codec.size, np.nan))
    with pytest.raises(InvalidInputError, match="flat update of"):
        codec.apply_delta(state, np.zeros(codec.size + 1))


def test_float64_models_use_a_float64_vector() -> None:
    model = torch.nn.Linear(3, 2).double()
    codec = StateCodec.from_model(model)
    flat = codec.flatten(model.state_dict())
    assert flat.dtype == np.float64
    np.testing.assert_array_equal(flat[:6], model.weight.detach().numpy().ravel())
    assert codec.unflatten(flat, reference=model.state_dict())["weight"].dtype == torch.float64


def test_architecture_mismatch_lists_every_difference() -> None:
    codec = StateCodec.from_model(bn_model())
    other = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.ReLU(), torch.nn.Linear(5, 2)
    )
    with pytest.raises(InvalidInputError) as info:
        codec.flatten(other.state_dict())
    message = str(info.value)
    assert "'0.weight' has shape (5, 4), expected (3, 4)" in message
    assert "'3.weight' has shape (2, 5), expected (2, 3)" in message
    with pytest.raises(InvalidInputError, match="missing entries"):
        codec.flatten({"0.weight": torch.zeros(3, 4)})
    half = bn_model().half()
    with pytest.raises(InvalidInputError, match="dtype float16, expected float32"):
        codec.flatten(half.state_dict())


def test_bad_models_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"torch\.nn\.Module"):
        StateCodec.from_model("not a model")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no floating-point parameters"):
        StateCodec.from_model(torch.nn.ReLU())
    with pytest.raises(ConfigurationError, match="buffers"):
        StateCodec.from_model(bn_model(), buffers="local")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        [[1.0], [1.0, 2.0]],  # ragged: np.asarray raises a bare ValueError
        ["a"] * 3,  # strings
        np.zeros((2, 2)),  # not flat
        np.array([object()] * 3, dtype=object),
        np.zeros(3, dtype=complex),
        None,
    ],
    ids=["ragged", "strings", "2-D", "object", "complex", "None"],
)
def test_unflatten_and_apply_delta_refuse_malformed_vectors_with_a_library_error(
    bad: object,
) -> None:
    model = bn_model()
    codec = StateCodec.from_model(model)
    state = model.state_dict()
    with pytest.raises(InvalidInputError):
        codec.unflatten(bad, reference=state)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        codec.apply_delta(state, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", ["2", None, float("nan"), True])
def test_apply_delta_refuses_a_scale_that_is_not_a_finite_number(scale: object) -> None:
    model = bn_model()
    codec = StateCodec.from_model(model)
    with pytest.raises(InvalidInputError):
        codec.apply_delta(model.state_dict(), np.zeros(codec.size), scale=scale)  # type: ignore[arg-type]
