"""``python -m stream``: the worker and Faust's other commands, plus streamrec's tools.

``python -m stream`` (or ``--help``) lists streamrec's commands first, one line each
(:data:`COMMANDS`), then Faust's.

``settings`` prints the worker's settings; ``worker --processes N`` (``auto``: one per core)
runs N workers of one group under a supervisor (:mod:`stream.supervisor`). ``broker``,
``demo``, ``replay``, ``backtest``, ``bench``, ``experiment`` and ``search-eval`` are tools
(:mod:`stream.tools`); each checks first that the extra it needs is installed. Anything
else goes to Faust's command line (``python -m stream worker``), once the settings parsed: a
bad ``STREAMREC_*`` value stops every command with one line naming the variable.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from stream.errors import StreamrecError
from stream.extras import require_extra
from stream.settings import Settings, settings_table
from stream.supervisor import split_processes, supervise

#: Tool commands: the module whose ``main(argv) -> int`` runs it, and the extra it needs.
TOOLS: dict[str, tuple[str, str | None]] = {
    "broker": ("stream.tools.cluster.broker", None),
    "demo": ("stream.tools.demo", "export"),
    "replay": ("stream.tools.replay.cli", "export"),
    "backtest": ("stream.tools.backtest.cli", "export"),
    "bench": ("stream.tools.bench.cli", "export"),
    "experiment": ("stream.tools.replay.experiment", "export"),
    "search-eval": ("stream.tools.search_eval.cli", "export"),
}
#: streamrec's commands, one line each: what ``python -m stream --help`` lists first.
COMMANDS: dict[str, str] = {
    "worker": "run the scoring worker (--processes N: N workers of one group; auto: one per core)",
    "settings": "print every STREAMREC_* variable with its default, then the values in force",
    "demo": "the whole product on one machine: broker, model, worker, traffic, lists",
    "broker": "start the embedded Kafka-protocol broker (Tansu) on a free port",
    "replay": "backtest a model through the live scoring path",
    "backtest": "train before a cut of the log, score the clicks after it, against baselines",
    "search-eval": "what a search shows, per query family, against BM25 and frozen MiniLM",
    "bench": "what streaming costs on top of the model, in one run (JSON)",
    "experiment": "per-arm rates of a live experiment, and a verdict",
}
HELP = ("-h", "--help", "help")
#: ``STREAMREC_LOG_LEVEL`` as Faust's ``--loglevel``.
FAUST_LOG_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}


def settings_main(argv: Sequence[str]) -> int:
    """Print every worker variable with its default, then the values in force."""
    del argv
    settings = Settings.from_env()
    print(settings_table())
    print()
    print(settings)
    return 0


def tool_main(name: str, argv: Sequence[str]) -> int:
    """Run one tool, after checking that its extra is installed."""
    module, extra = TOOLS[name]
    if extra is not None:
        require_extra(extra, f"python -m stream {name}")
    run = importlib.import_module(module).main
    code: int = run(argv)
    return code


def faust_main(args: list[str]) -> int:
    """Faust's command line over the one App; the worker logs at ``STREAMREC_LOG_LEVEL``.

    ``worker --processes N`` runs N workers under :mod:`stream.supervisor`.
    """
    settings = Settings.from_env()  # before the App's module reads them, so errors are one line
    if args[:1] == ["worker"]:
        processes, args = split_processes(args)
        if not any(a.startswith(("-l", "--loglevel")) for a in args):
            args = [*args, f"--loglevel={FAUST_LOG_LEVELS[settings.log_level]}"]
        if processes > 1:
            return supervise(settings, args, processes)
    from stream.app import app

    sys.argv = [sys.argv[0], *args]
    app.main()
    return 0


def faust_help() -> int:
    """Faust's own help and commands, without building the App (no model needed to read it)."""
    from faust.cli.faust import cli

    try:
        cli.main(["--help"], prog_name="python -m stream")
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def usage() -> str:
    """The usage text: streamrec's commands, one line each (Faust's own follow in ``--help``)."""
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m stream COMMAND [ARGS]...", "", "streamrec's commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in COMMANDS.items()]
    lines += [
        "",
        "`python -m stream COMMAND --help` tells more of each.",
        "Faust's own commands follow; they run the same App.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a streamrec command, or to Faust's command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if not args or args[0] in HELP:
            print(usage(), flush=True)
            return faust_help()
        if args[:1] == ["settings"]:
            return settings_main(args[1:])
        if args and args[0] in TOOLS:
            return tool_main(args[0], args[1:])
        return faust_main(args)
    except StreamrecError as exc:
        print(f"streamrec: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
