"""Demos and experiments: the code behind ``secureagg demo`` and the benchmarks, not the library.

Everything here is a *user* of the library, written the way a user would write it: a data set
(sklearn's digits, shipped with scikit-learn: nothing is downloaded, see :mod:`.data`), a model,
a training loop, and runs of :class:`~secureagg.fl.FederatedRun` and
:class:`~secureagg.split.SplitLearning` that measure accuracy, privacy, attacks and cost. It sits
above the training layers (:mod:`secureagg.fl`, :mod:`secureagg.split`) and below the command
line (:mod:`secureagg.cli`), and nothing in the library imports it (the import-linter layers
contract in ``pyproject.toml``).

* :mod:`.data` - the Dirichlet label-skew split and the digits data set;
* :mod:`.federated_task` - the federated digits task (settings, model, loop, run);
* :mod:`.federated` - ``secureagg demo``: the run, the plaintext baseline, the comparison;
* :mod:`.split_experiments` - measured split-learning experiments (the demo and
  ``benchmarks/bench_split.py``);
* :mod:`.split` - ``secureagg demo split``.

Importing this package imports nothing else; its modules need torch and scikit-learn (the ``dp``
extra and ``all``).
"""
