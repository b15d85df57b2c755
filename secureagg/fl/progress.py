"""Progress display of a federated run: rounds and clients, or one plain line per round.

With ``tqdm`` installed (the ``progress`` extra) a bar shows the rounds and a second one the
clients of the current round, on stderr; per-round summary lines go to stdout above the bars.
Without tqdm, only the summary lines are printed. ``enabled=False`` (``--quiet``) prints nothing.
The display never affects the run: it reads the numbers the run records, nothing else.

>>> p = Progress(total_rounds=2, enabled=False)
>>> p.start_round(1, clients=3); p.client_done(); p.end_round("round 1: ok"); p.close()
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["Progress"]


def _tqdm() -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class Progress:
    """Rounds/clients progress with a plain fallback (see the module docstring)."""

    def __init__(
        self,
        *,
        total_rounds: int,
        enabled: bool = True,
        first_round: int = 1,
        use_tqdm: bool | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.out = out
        factory = _tqdm() if enabled and use_tqdm is not False else None
        self._tqdm = factory
        self._rounds: Any = None
        self._clients: Any = None
        if factory is not None:
            self._rounds = factory(
                total=total_rounds,
                initial=first_round - 1,
                desc="rounds",
                unit="round",
                position=0,
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
                disable=None,  # no bars when stderr is not a terminal
            )

    def _stream(self) -> TextIO:
        return self.out if self.out is not None else sys.stdout

    def start_round(self, round_number: int, *, clients: int) -> None:
        if self._tqdm is None:
            return
        self._rounds.set_description(f"round {round_number}")
        self._clients = self._tqdm(
            total=clients,
            desc="clients",
            unit="client",
            position=1,
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
            disable=None,
        )

    def client_done(self) -> None:
        if self._clients is not None:
            self._clients.update(1)

    def end_round(self, line: str | None) -> None:
        if self._clients is not None:
            self._clients.close()
            self._clients = None
        if self._rounds is not None:
            self._rounds.update(1)
        if line:
            self.write(line)

    def write(self, line: str) -> None:
        """Print one line (above the bars when they are shown); nothing when disabled."""
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.write(line, file=self._stream())
        else:
            print(line, file=self._stream(), flush=True)

    def close(self) -> None:
        if self._clients is not None:
            self._clients.close()
            self._clients = None
        if self._rounds is not None:
            self._rounds.close()
            self._rounds = None
