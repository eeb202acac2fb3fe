"""``docs/configuration.md``, generated from the settings objects (a test keeps it equal).

``python -m stream.tools.configuration docs/configuration.md`` (``make docs``) rewrites it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from model_export.data.sources import DataSettings
from stream.settings import Settings
from stream.tools.cluster.broker import BrokerSettings

HEADER = """\
# Configuration

<!-- Generated from the settings objects by `make docs`; do not edit by hand. -->

Every setting is an environment variable `STREAMREC_<NAME>`, read once into a frozen settings
object; nothing else reads the environment. An invalid value stops the worker or tool with
one line naming the variable (exit code 2, or 1 under `faust -A stream.app`).
`python -m stream settings` prints the worker's table and the values in force.
"""

WORKER = """\
## The worker (`stream/settings.py`)

What a worker reads; the replay, the bench and the demo start theirs with the same settings.
"""

SECURITY = """\
**Kafka security.** `STREAMREC_SECURITY_PROTOCOL` `SSL` uses `STREAMREC_SSL_CAFILE` (and
`STREAMREC_SSL_CERTFILE`/`_KEYFILE` for mutual TLS); `SASL_PLAINTEXT` and `SASL_SSL` use
`STREAMREC_SASL_MECHANISM` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`) with
`STREAMREC_SASL_USERNAME`/`_PASSWORD`. They reach the Faust/aiokafka clients as Faust
`broker_credentials`. The password never appears in logs or in `python -m stream settings`.

**Partitions.** Topics streamrec creates get `STREAMREC_TOPIC_PARTITIONS` partitions; that
count is the ceiling on useful workers. The context table is co-partitioned with `events`, so
the worker stops with a clear message if `events` exists with another count. Create topics
before producers write to them: a broker that auto-creates a topic on first produce uses its
own default count.
"""

TOOLS = """\
## The tools

Settings only the tools read: the embedded broker (`stream/tools/cluster/broker.py`) and the
datasets folder (`model_export/data/sources.py`: `fetch-data`, training, replay, bench, demo).
"""


def page() -> str:
    """The whole page."""
    return "\n".join(
        [
            HEADER,
            WORKER,
            Settings.table(),
            "",
            SECURITY,
            TOOLS,
            BrokerSettings.table(),
            "",
            DataSettings.table(),
            "",
        ]
    )


def main(argv: list[str]) -> int:
    """Write the page to the path given (or print it)."""
    if argv:
        Path(argv[0]).write_text(page())
    else:
        sys.stdout.write(page())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
