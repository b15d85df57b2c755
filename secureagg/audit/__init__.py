"""What a run leaves behind, and (to come) what an auditor makes of it.

:mod:`secureagg.audit.rundir` is the one writer of a run directory: ``secureagg simulate``, the
demos, federated training (:mod:`secureagg.fl`) and split learning's demo all write through it,
atomically. It sits under the training layers and imports neither torch nor an HE library.
Importing this package imports nothing.
"""
