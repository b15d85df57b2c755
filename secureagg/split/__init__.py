"""Split learning: vanilla, U-shaped and SplitFed, with measured protections.

The user's model is cut in parts (:func:`split_sequential`, or their own modules); the client runs
the first part on its private data and sends the cut-layer activations; the server runs the rest
and sends gradients back (:mod:`~secureagg.split.parties`, sans-I/O). :class:`SplitLearning`
drives it over the in-memory transport with the versioned codec. Protections, each optional:
:class:`ActivationDP` (accounted), :class:`NoPeek`, label protection for the vanilla topology
(:mod:`~secureagg.split.label_protection`) and an encrypted cut layer
(:mod:`~secureagg.split.encrypted`, :mod:`~secureagg.split.he_cut`; they need the ``he`` extra and
are imported from there). :mod:`~secureagg.split.attacks` measures what each protection buys;
:mod:`~secureagg.split.scope` states what each ε covers and what it does not.
Importing this package does not import torch or tenseal; using it does.
"""

from __future__ import annotations

from secureagg.split.attacks import (
    AttackResult,
    InversionResult,
    cosine_attack,
    inversion_probe,
    norm_attack,
    roc_auc,
)
from secureagg.split.label_protection import MarvellNoise, MaxNormNoise, ProtectionReport
from secureagg.split.messages import (
    Activations,
    CutGradients,
    OutputGradients,
    ServerOutputs,
)
from secureagg.split.model import split_sequential
from secureagg.split.parties import SplitClient, SplitServer
from secureagg.split.protections import ActivationDP, NoPeek, distance_correlation
from secureagg.split.run import SplitLearning, SplitStats
from secureagg.split.scope import SplitSetting, privacy_scope

__all__ = [
    "ActivationDP",
    "Activations",
    "AttackResult",
    "CutGradients",
    "InversionResult",
    "MarvellNoise",
    "MaxNormNoise",
    "NoPeek",
    "OutputGradients",
    "ProtectionReport",
    "ServerOutputs",
    "SplitClient",
    "SplitLearning",
    "SplitServer",
    "SplitSetting",
    "SplitStats",
    "cosine_attack",
    "distance_correlation",
    "inversion_probe",
    "norm_attack",
    "privacy_scope",
    "roc_auc",
    "split_sequential",
]
