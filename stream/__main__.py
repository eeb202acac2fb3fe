"""``python -m stream``: ``worker`` and Faust's commands, plus streamrec's own tools.

``bench``, ``broker``, ``demo``, ``replay`` and ``settings`` run without building the Faust
app; anything else is handed to Faust's command line (``python -m stream worker -l info``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from stream.broker import EmbeddedBroker
from stream.errors import StreamrecError
from stream.settings import Settings, settings_table


def broker_main(argv: Sequence[str]) -> int:
    """Run the embedded broker in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m stream broker",
        description="Start the embedded Kafka-protocol broker (Tansu, memory storage) on "
        "127.0.0.1 in the foreground. Everything it holds is lost when it stops.",
    )
    parser.add_argument("--port", type=int, default=9092, help="port to listen on (default 9092)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    broker = EmbeddedBroker(args.port, binary=settings.tansu_bin, log_file=None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    broker.start()
    print(f"broker listening on {broker.bootstrap_servers}", flush=True)
    print(f"export STREAMREC_BROKER={broker.url}", flush=True)
    try:
        assert broker.process is not None
        code = broker.process.wait()
        print(f"broker exited with code {code}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def settings_main(argv: Sequence[str]) -> int:
    """Print every STREAMREC_* variable with its default and the value in force."""
    del argv
    print(settings_table())
    print()
    print(Settings.from_env())
    return 0


def demo_main(argv: Sequence[str]) -> int:
    """Run the end-to-end demo (see :mod:`stream.demo`)."""
    from stream.demo import main as run_demo

    return run_demo(argv)


def bench_main(argv: Sequence[str]) -> int:
    """Benchmark the streaming path against the model alone (see :mod:`stream.bench`)."""
    from stream.bench import main as run_bench

    return run_bench(argv)


def replay_main(argv: Sequence[str]) -> int:
    """Backtest a model over an event log (see :mod:`stream.replay`)."""
    from stream.replay import main as run_replay

    return run_replay(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "broker": broker_main,
    "settings": settings_main,
    "demo": demo_main,
    "replay": replay_main,
    "bench": bench_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a streamrec command, or to Faust's command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        try:
            return COMMANDS[args[0]](args[1:])
        except StreamrecError as exc:
            print(f"streamrec: {exc}", file=sys.stderr)
            return 2
    from stream.app import app

    sys.argv = [sys.argv[0], *args]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
