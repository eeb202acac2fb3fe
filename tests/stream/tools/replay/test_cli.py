"""The replay tool's checks before it runs (the end-to-end runs are in tests/integration/)."""

import pytest

from stream.settings import Settings
from stream.tools.replay.cli import replay


def test_speed_needs_a_broker(tiny_model_dir, movielens):
    from stream.errors import StreamrecError

    with pytest.raises(StreamrecError, match="--via-kafka"):
        replay(movielens[:10], [str(tiny_model_dir)], Settings(), speed=10.0, progress=False)
