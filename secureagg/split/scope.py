"""What each ε of split learning covers, and what it does not: the scope an auditor reads.

A split-learning ε is narrow. :class:`~secureagg.split.ActivationDP` bounds one channel - the
cut-layer activations - and the encrypted cut layer's ε bounds one release - the noised weight
gradient. Everything else a client's records reach the server through is outside that ε, and
which channels exist depends on the set-up actually run:

=================================  ===================================================
channel (``"channel"`` id)          exists when
=================================  ===================================================
``activations``                     always (plaintext cut); covered by ActivationDP
``labels``                          vanilla: the server holds every record's label
``output_gradients``                U-shaped: dL/d(server outputs) goes to the server;
                                    encrypted cut layer with ``encrypt_gradient=False``
``client_model_training``           always: the client part is trained on every record
                                    with exact gradients, and shapes every later release
``averaged_client_parts``           SplitFed: the average of the client parts (the server
                                    learns it; covered only if the aggregator adds DP)
``client_parts_handover``           sequential split learning: the next client gets the
                                    client parts trained on this client's records
``client_parts_shared``             the set-up is unknown (a bare ``ActivationDP`` or
                                    ``SplitClient``): a driver *may* share the parts
``weight_gradient``                 encrypted cut layer; covered by its ε
=================================  ===================================================

:func:`privacy_scope` builds the record (a JSON-ready dict) from the :class:`SplitSetting` in
use: ``epsilon_covers``, ``epsilon_does_not_cover`` and ``protected_otherwise`` (encryption,
masking, or another mechanism's own ε) are lists of ``{"channel", "direction", "what"}``;
``adjacency``, ``unit``, ``public`` and ``conditional_on`` say for whom and under which
assumptions; ``summary`` says it in one paragraph. When the set-up is not known the scope lists
every channel that *may* exist, so that it never claims more than holds.

>>> s = privacy_scope(SplitSetting(topology="u-shaped", sharing="none"), covered="activations")
>>> [c["channel"] for c in s["epsilon_does_not_cover"]]
['output_gradients', 'client_model_training']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["SplitSetting", "privacy_scope"]

Topology = Literal["vanilla", "u-shaped", "u-shaped-encrypted"]
Sharing = Literal["none", "splitfed", "sequential", "unknown"]

ADJACENCY = (
    "replace-one: two data sets of one client are neighbours if they differ in one record (its "
    "inputs and its label), with the same number of records"
)


@dataclass(frozen=True)
class SplitSetting:
    """The set-up a split-learning ε was spent in (what decides the channels that exist).

    ``topology`` ``None`` means unknown. ``sharing``: how the client parts leave a client -
    ``"splitfed"`` (averaged through ``aggregator``), ``"sequential"`` (handed to the next
    client in the clear), ``"none"`` (one client) or ``"unknown"``. ``aggregator_dp``: the
    SplitFed aggregator adds DP of its own (its ε is separate). ``label_protection``: the method
    the label holder applies to the gradients it sends (no ε). ``clients``: data holders.
    """

    topology: Topology | None = None
    sharing: Sharing = "unknown"
    clients: int | None = None
    aggregator: str | None = None
    aggregator_dp: bool = False
    label_protection: str | None = None
    nopeek: bool = False
    encrypt_gradient: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "topology": self.topology or "unknown",
            "sharing": self.sharing,
            "clients": self.clients,
            "aggregator": self.aggregator,
            "aggregator_dp": self.aggregator_dp,
            "label_protection": self.label_protection,
            "nopeek": self.nopeek,
        }


def _channel(channel: str, direction: str, what: str, **extra: Any) -> dict[str, Any]:
    return {"channel": channel, "direction": direction, "what": what, **extra}


def _label_note(setting: SplitSetting) -> str:
    if setting.label_protection is None:
        return "no label protection"
    return (
        f"noised by {setting.label_protection} before it is sent (a measured defence against the "
        "norm/cosine label attacks; no ε is claimed for it)"
    )


def _channels(setting: SplitSetting) -> list[dict[str, Any]]:
    """Every channel through which a client's records reach another party in ``setting``."""
    topology, out = setting.topology, []
    out.append(_channel(
        "activations", "client -> server",
        "the cut-layer activation of every record, once per step"
        + (" (encrypted: the server sees CKKS ciphertexts only)"
           if topology == "u-shaped-encrypted" else ""),
    ))
    if topology in ("vanilla", None):
        out.append(_channel(
            "labels", "client -> server",
            "the label of every record: the vanilla server computes the loss, so it holds the "
            "labels in the clear (a label table indexed by example id, or labels sent with each "
            "batch)" + (" - if the topology is vanilla" if topology is None else ""),
        ))
    if topology in ("u-shaped", None) or (
        topology == "u-shaped-encrypted" and not setting.encrypt_gradient
    ):
        what = (
            "the gradient of the loss with respect to the server's outputs, for every record, "
            "in the clear: a function of the record's label and of the client's head, from which "
            f"the norm and cosine attacks read the labels; {_label_note(setting)}"
        )
        if topology == "u-shaped-encrypted":
            what = (
                "G = dL/dZ for every record in the clear (encrypt_gradient=False): it reveals the "
                "labels (norm/cosine attacks) and, through the head, Z"
            )
        if topology is None:
            what += " - if the topology is U-shaped"
        out.append(_channel("output_gradients", "client -> server", what))
    if topology == "u-shaped-encrypted" and setting.encrypt_gradient:
        out.append(_channel(
            "output_gradients", "client -> server",
            "G = dL/dZ for every record, encrypted (CKKS): the server sees ciphertexts only",
        ))
    if topology == "u-shaped-encrypted":
        out.append(_channel(
            "weight_gradient", "client -> server",
            "the gradient of the server's layer [W; b], summed over the batch, each record's "
            "contribution clipped to L2 norm clip and Gaussian noise added (std "
            "noise_multiplier * clip) - the server's SGD step",
        ))
    out.append(_channel(
        "client_model_training", "client model -> every later release",
        "the client's part is trained on every record with exact (un-noised) gradients, and "
        "every later release - activations, gradients, weight gradients - of *other* records "
        "is computed with those parameters, so it carries information about a record that "
        "this ε does not bound; train the client part with DP-SGD (secureagg.dp.make_private) "
        "and add that ε, or freeze it, to cover it",
    ))
    if setting.sharing == "splitfed":
        out.append(_channel(
            "averaged_client_parts", "client -> aggregator -> server",
            f"after every epoch the client parts, trained on every record, are averaged through "
            f"{setting.aggregator or 'the secure aggregator'}: the server learns the average "
            "of the clients' weight deltas (no single client's), which depends on every record"
            + ("" if setting.aggregator_dp else ", without DP noise"),
        ))
    elif setting.sharing == "sequential":
        out.append(_channel(
            "client_parts_handover", "client -> next client",
            "sequential split learning: the next client receives the client parts trained on "
            "this client's records, in the clear",
        ))
    elif setting.sharing == "unknown":
        out.append(_channel(
            "client_parts_shared", "client -> others",
            "if the driver averages the client parts (SplitFed) or hands them to the next client "
            "(sequential), those parts depend on every record and are not covered",
        ))
    return out


def privacy_scope(
    setting: SplitSetting | None,
    *,
    covered: str | None,
    unit: str = "one training record of one client",
    adjacency: str = ADJACENCY,
    public: Sequence[str] = (),
    mechanism: str | None = None,
    accountant: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
) -> dict[str, Any]:
    """The scope record of an ε spent on channel ``covered`` (``None``: no ε is claimed).

    Every channel of ``setting`` other than ``covered`` lands in ``epsilon_does_not_cover``,
    except those protected by something else (encryption, or a DP aggregator's own ε), which
    land in ``protected_otherwise`` with what protects them.
    """
    setting = setting or SplitSetting()
    covers: list[dict[str, Any]] = []
    uncovered: list[dict[str, Any]] = []
    otherwise: list[dict[str, Any]] = []
    for ch in _channels(setting):
        name = ch["channel"]
        encrypted = setting.topology == "u-shaped-encrypted" and (
            name == "activations" or (name == "output_gradients" and setting.encrypt_gradient)
        )
        if name == covered:
            covers.append(ch)
        elif encrypted:
            otherwise.append({**ch, "protection": (
                "CKKS encryption (RLWE, 128-bit): computational confidentiality, not part of ε"
            )})
        elif name == "averaged_client_parts" and setting.aggregator_dp:
            otherwise.append({**ch, "protection": (
                "the aggregator's own differential privacy, client-level (which bounds any one "
                "record of the client too): a separate ε, reported by the aggregator's "
                "accountant, that adds to this one"
            )})
        else:
            uncovered.append(ch)
    public_facts = [
        "the number of records of each client, the batch sizes and the number of steps and "
        "epochs (message sizes and counts)",
        "the model architecture and where it is cut",
        *public,
    ]
    if setting.topology == "vanilla":
        public_facts.append("which records are in each batch (the example ids sent with it)")
    record: dict[str, Any] = {
        "setting": setting.to_dict(),
        "differential_privacy": covered is not None,
        "epsilon": epsilon,
        "delta": delta,
        "unit": unit,
        "adjacency": adjacency if covered is not None else None,
        "mechanism": mechanism,
        "accountant": accountant,
        "conditional_on": (
            "the client model's parameters at the time of each release: the ε bounds each "
            "release as a mechanism on its own record given those parameters; the parameters "
            "themselves are trained on every record (channel client_model_training)"
            if covered is not None
            else None
        ),
        "epsilon_covers": covers,
        "epsilon_does_not_cover": uncovered,
        "protected_otherwise": otherwise,
        "public": public_facts,
    }
    record["summary"] = _summary(record, covered)
    return record


#: Each channel in a few words, for the one-paragraph summary.
_WORDS = {
    "activations": "the cut-layer activations",
    "labels": "the labels, which the vanilla server holds",
    "output_gradients": "the output gradients sent to the server",
    "client_model_training": "the client model, trained on every record",
    "averaged_client_parts": "the client parts averaged by SplitFed",
    "client_parts_handover": "the client parts handed to the next client",
    "client_parts_shared": "client parts a driver may average or hand on",
    "weight_gradient": "the noised weight gradient of the server's layer",
}


def _named(channel: str) -> str:
    return f"{_WORDS.get(channel, channel.replace('_', ' '))} [{channel}]"


def _summary(record: dict[str, Any], covered: str | None) -> str:
    gaps = "; ".join(_named(c["channel"]) for c in record["epsilon_does_not_cover"])
    gaps = gaps or "nothing else"
    if covered is None:
        return (
            "No ε is claimed: no differential privacy protects what this run released. "
            f"Channels through which a client's records reach another party: {gaps}."
        )
    eps = record["epsilon"]
    shown = "ε" if eps is None else f"ε = {eps:.4g} (δ = {record['delta']:g})"
    other = "; ".join(
        f"{_named(c['channel'])} by {c['protection'].split(':')[0]}"
        for c in record["protected_otherwise"]
    )
    text = (
        f"{shown} bounds what {_named(covered)} can reveal about "
        f"{record['unit']} ({record['adjacency']}), given the client model at the time of each "
        f"release. It does not cover: {gaps}."
    )
    if other:
        text += f" Protected by other means, outside this ε: {other}."
    return text
