"""``python -m model_export``: data, training, export and evaluation (see :mod:`model_export.cli`).

Every command needs the ``export`` extra; without it the command says so in one line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from stream.errors import StreamrecError
from stream.extras import require_extra


def main(argv: Sequence[str] | None = None) -> int:
    """Check the extra, then run the command line."""
    try:
        require_extra("export", "python -m model_export")
    except StreamrecError as exc:
        print(f"model_export: {exc}", file=sys.stderr)
        return 2
    from model_export.cli import main as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
