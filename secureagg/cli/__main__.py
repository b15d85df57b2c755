"""``python -m secureagg.cli``: the ``secureagg`` command without the installed script."""

from __future__ import annotations

import sys

from secureagg.cli import main

sys.exit(main())
