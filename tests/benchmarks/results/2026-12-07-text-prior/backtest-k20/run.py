"""The temporal backtest with another ``text_prior_clicks`` (issue 28).

``python run.py CLICKS THREADS BACKTEST_ARGS...`` runs ``python -m stream backtest`` with the
text model's prior weighted by CLICKS (``RankerConfig.text_prior_clicks``, 5 when this ran,
20 since) on THREADS torch threads. ``model_no_text`` does not depend on the prior: a
``--work`` folder holding that cut's ``model_no_text`` from an earlier run is reused (the
backtest retrains only what is missing), so only the text model is trained again.
"""

from __future__ import annotations

import functools
import sys

import torch

from model_export.model import ranker
from stream.tools.backtest import cli


def main() -> int:
    """Patch the default, then run the backtest's own command."""
    clicks, threads = float(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    # train_model imports RankerConfig when it runs, so it picks up this default
    ranker.RankerConfig = functools.partial(  # type: ignore[misc]
        ranker.RankerConfig, text_prior_clicks=clicks
    )
    return cli.main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
