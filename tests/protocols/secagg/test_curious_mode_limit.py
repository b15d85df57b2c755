"""What curious mode gives up: a deviating server recovers one client's input exactly.

The attack (the known limit of the semi-honest model, Bonawitz et al. 2017, section 6), with one
survivor list that is the same for every client that receives it:

1. the server relays keys and shares honestly, except that it delivers the victim V only the
   shares of some peers A - so V's masked input carries pairwise masks with A only;
2. it declares A dropped (although their masked inputs arrived) and asks the remaining peers C,
   not V, to unmask with ``survivors = C + [V]``, ``dropped = A``; every check of every client
   passes (each one's lists agree with the shares it was delivered);
3. C reveal their shares of b_V (V "survived") and of each a's mask key (a "dropped"): the server
   strips PRG(b_V) and every PRG(s_Va) from V's masked input and reads V's input exactly.

It needs |A| + 1 >= t (V accepts the delivery) and |C| >= t (t shares of b_V and of each mask key):
n - 1 >= 2t - 1. Malicious mode requires t > (n + c) / 2 (and signs keys and the survivor list),
so no split of V's peers works there: the same adversary fails for every choice of A.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import secureagg as sa
from secureagg.crypto import keyagree, labels, prg, shamir
from secureagg.errors import InvalidShareError, ProtocolError
from secureagg.protocols.base import SERVER, Message
from secureagg.protocols.secagg import messages as m
from tests.protocols.secagg.driver import grid_updates, make_setup

N, V, D = 6, 0, 5


def _send(clients, recipient: int, message: Message) -> Message | None:
    """Deliver a server message; the reply, or None if the client aborted."""
    try:
        (reply,) = clients[recipient].receive(SERVER, message)
    except ProtocolError:
        return None
    return reply.message


def _attack(agg, ups, victim_view: set[int]) -> np.ndarray | None:
    """Play the deviating server; the victim's recovered input, or None if the attack failed."""
    setup = make_setup(agg, ups)
    server, clients, ctx = setup.server, setup.clients, setup.server.ctx
    peers = set(range(N)) - {V}
    a_set, c_set = set(victim_view), peers - set(victim_view)
    survivors = tuple(sorted(c_set | {V}))
    dropped = tuple(sorted(a_set))

    # Stages advertise and share: the honest server's messages.
    out = server.start()
    for _ in ("advertise", "share"):
        for env in out:
            reply = _send(clients, env.recipient, env.message)
            if reply is not None:
                server.receive(env.recipient, reply)
        out = server.end_stage()
    # Stage masked: the victim gets only the shares of A.
    masked: dict[int, np.ndarray] = {}
    for env in out:
        msg = env.message
        if env.recipient == V:
            msg = m.ShareDelivery(
                session_id=msg.session_id,
                round_id=msg.round_id,
                ciphertexts={u: ct for u, ct in msg.ciphertexts.items() if u in a_set},
            )
        reply = _send(clients, env.recipient, msg)
        if reply is not None:
            masked[env.recipient] = reply.values
    if V not in masked:
        return None  # the victim refused the delivery: nothing about it leaks
    ids = {"session_id": ctx.session_id, "round_id": ctx.round_id}
    signatures: dict[int, bytes] = {}
    if ctx.malicious:  # the consistency round over the one survivor list
        request = m.ConsistencyRequest(**ids, survivors=survivors)
        for u in survivors:
            reply = _send(clients, u, request)
            if reply is not None:
                signatures[u] = reply.signature
    unmask = m.UnmaskRequest(**ids, survivors=survivors, dropped=dropped, signatures=signatures)
    b_shares: list[bytes] = []
    k_shares: dict[int, list[bytes]] = {a: [] for a in a_set}
    for u in sorted(c_set):  # the victim is not asked: its view would expose the lie
        reply = _send(clients, u, unmask)
        if reply is None:
            continue
        if V in reply.self_mask_shares:
            b_shares.append(reply.self_mask_shares[V])
        for a, share in reply.mask_key_shares.items():
            k_shares[a].append(share)
    try:
        b_seed = shamir.reconstruct(b_shares)
        mask_keys = {a: keyagree.KeyPair.from_private_bytes(shamir.reconstruct(s))
                     for a, s in k_shares.items()}
    except InvalidShareError:
        return None  # fewer than t shares of a secret
    values = masked[V].copy()
    prg.add_mask(values, b_seed, label=labels.SELF_MASK, context=ctx.self_mask_context(V),
                 subtract=True)
    for a, key in mask_keys.items():
        seed = ctx.pairwise_seed(key, a, clients[V]._mask_keys.public_bytes, V)
        # V added PRG(s_Va) if V < a, subtracted it if V > a: undo it.
        prg.add_mask(values, seed, label=labels.PAIRWISE_MASK, context=ctx.mask_context(),
                     subtract=a > V)
    return ctx.encoder.decode(values)


def _agg(threat: str):
    return sa.make_aggregator(
        "secagg", num_clients=N, clip=1.0, threat=threat, dropout_rate=0.0, corrupt_rate=0.0,
        degree=N - 1, threshold=3 if threat == "curious" else 4,
    )


def test_curious_mode_server_recovers_one_input_exactly_with_one_survivor_list():
    agg = _agg("curious")
    ups = grid_updates(agg, N, [(D,)])
    recovered = _attack(agg, ups, victim_view={1, 2})
    assert recovered is not None
    np.testing.assert_array_equal(recovered, ups[V][0])  # exact: the input itself
    assert agg.parameters()["threat_model_note"].startswith("curious mode trusts the server")


@pytest.mark.parametrize(
    "view",
    [set(c) for r in range(N) for c in itertools.combinations(range(1, N), r)],
    ids=lambda v: "A=" + "".join(map(str, sorted(v))) if v else "A=none",
)
def test_malicious_mode_stops_the_same_attack_for_every_choice_of_peers(view):
    agg = _agg("malicious")
    ups = grid_updates(agg, N, [(D,)])
    assert _attack(agg, ups, victim_view=view) is None
    assert "threat_model_note" not in agg.parameters()
