"""The `hetclip` command line.

  hetclip data prepare --name imagetext        build an embedded data set from registry packages
  hetclip data summary                         what the prepared data sets hold
  hetclip data inspect --config default.py     a few batches of a config's input pipeline
  hetclip data train-tokenizer --input F --out P   train a sentencepiece model on captions
  hetclip data subset --data SPEC --classes K --per-class n --out s.json   a nested class subset
  hetclip class-grid --config C --sizes 2000,6000 --classes 2,4,8 ...   pre-train + probe a grid
  hetclip plan-classes --grid grid.json --target-size N   choose K for N images from a grid
  hetclip config show --config default.py      the resolved config
  hetclip train --config default.py --workdir runs/x   train (resumes when runs/x has checkpoints)

Every command that takes --config also takes overrides: --config.a.b=value (or --config.a.b value).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hetclip import allocator, class_budget_commands

CONFIG_HELP = (
    "config file, optionally with arguments: path/to/config.py:key=val,key2=val2 (shipped "
    "configs by name, e.g. default.py); override keys with --config.a.b=value"
)


def _split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Pulls '--config.a.b=v' / '--config.a.b v' out of argv (argparse cannot know the keys)."""
    rest, overrides, i = [], [], 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key = arg[len("--config.") :]
            if "=" in key:
                overrides.append(key)
            elif i + 1 < len(argv):
                overrides.append(f"{key}={argv[i + 1]}")
                i += 1
            else:
                raise SystemExit(f"error: {arg} needs a value (--config.key=value).")
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def _load(args: argparse.Namespace, overrides: list[str]):
    from hetclip.config import apply_overrides, load_config

    return apply_overrides(load_config(args.config), overrides)


# --- data --------------------------------------------------------------------------------------


def cmd_data_prepare(args: argparse.Namespace, overrides: list[str]) -> int:
    import importlib

    from data_pipelines.paths import cache_dir, data_dir
    from data_pipelines.prepare import DATASETS
    from data_pipelines.sources.tfrecord import read_manifest

    out = Path(args.out or data_dir() / args.name)
    manifest_path = out / "manifest.json"
    if manifest_path.exists() and not args.force:
        manifest = read_manifest(args.name, out)
        counts = {s: v["count"] for s, v in manifest["splits"].items()}
        print(f"[prepare] {args.name} already prepared in {out}: {counts} (--force rebuilds)")
        return 0
    module = importlib.import_module(DATASETS[args.name])
    kwargs = {"cache": Path(args.cache or cache_dir()), "tree": args.from_tree}
    if args.name == "imagetext":
        kwargs.update(max_side=args.max_side, limit_per_source=args.limit_per_source)
    start = time.monotonic()
    path = module.prepare(out, **kwargs)
    manifest = read_manifest(args.name, path)
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    print(f"[prepare] wrote {args.name} to {path} in {time.monotonic() - start:.0f}s: {counts}")
    skipped = manifest["skipped"]
    if skipped["total"]:
        print(
            f"[prepare] skipped {skipped['total']} records: {skipped['by_reason']} "
            f"(details in {path / 'skipped_records.json'})"
        )
    return 0


def cmd_data_summary(args: argparse.Namespace, overrides: list[str]) -> int:
    from data_pipelines.paths import data_dir
    from data_pipelines.prepare import DATASETS

    root = data_dir()
    found = False
    for name in DATASETS:
        manifest_path = root / name / "manifest.json"
        if not manifest_path.exists():
            print(f"{name}: not prepared (run `hetclip data prepare --name {name}`)")
            continue
        found = True
        manifest = json.loads(manifest_path.read_text())
        print(f"{name} ({root / name}): {manifest.get('description', '')}")
        for split, info in manifest["splits"].items():
            sources = ", ".join(f"{k or name}: {v}" for k, v in info["by_source"].items())
            print(f"  {split:<11} {info['count']:>6} examples  ({sources})")
        if "categories" in manifest:
            held = manifest["categories"].get("heldout", [])
            print(f"  held-out categories (zero-shot on unseen classes): {len(held)}")
        skipped = manifest["skipped"]
        print(f"  skipped at preparation: {skipped['total']} {skipped['by_reason'] or ''}")
        print(f"  licences: {manifest.get('packages')}")
    return 0 if found else 1


def cmd_data_inspect(args: argparse.Namespace, overrides: list[str]) -> int:
    import numpy as np

    from data_pipelines.input import pipeline_from_config

    config = _load(args, overrides)
    pipeline = pipeline_from_config(
        config.input,
        pp_key=args.pp_key,
        seed=config.get("seed", 0),
        process_index=0,
        process_count=1,
    )
    print(pipeline.source.describe())
    iterator = pipeline.batches() if args.pp_key == "pp" else pipeline.eval_batches()
    for step in range(args.batches):
        batch = next(iterator)
        shapes = {k: f"{v.dtype}{list(v.shape)}" for k, v in batch.items()}
        print(f"batch {step}: {shapes}")
        for key, value in batch.items():
            if value.dtype.kind in "iuf":
                print(
                    f"  {key}: min {value.min():.3g} max {value.max():.3g} "
                    f"mean {np.mean(value):.3g}"
                )
    print(pipeline.skips.summary())
    return 0


def cmd_data_train_tokenizer(args: argparse.Namespace, overrides: list[str]) -> int:
    from data_pipelines.tokenizers import train_sentencepiece

    sentences: list[str] = []
    for path in map(Path, args.input):
        if path.suffix in (".csv", ".jsonl", ".json"):
            from data_pipelines.sources.manifest import ManifestSource

            sentences.extend(t for row in ManifestSource(str(path)).rows for t in row["texts"])
        else:
            sentences.extend(path.read_text(encoding="utf-8").splitlines())
    model = train_sentencepiece(
        sentences,
        args.out,
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        lowercase=args.lowercase,
    )
    print(f"wrote {model} (trained on {len(sentences)} lines); use it as tokenizer 'sp:{model}'")
    return 0


def cmd_config_show(args: argparse.Namespace, overrides: list[str]) -> int:
    print(_load(args, overrides).to_json_best_effort(indent=2))
    return 0


# --- train -------------------------------------------------------------------------------------


def _init_distributed(args: argparse.Namespace) -> None:
    """jax.distributed for multi-host runs; must come before any other JAX call."""
    if args.num_processes is None:
        return
    import jax

    # CPU collectives between processes (only used where the devices are CPUs). Asking which
    # backend is present would start it, which must wait until after initialize().
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        args.coordinator, num_processes=args.num_processes, process_id=args.process_id
    )


def cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    import logging

    _init_distributed(args)
    from hetclip.train.evaluators import evaluator_from_config
    from hetclip.train.loop import NonFiniteError, Stopped, train, write_summary

    # Our own progress at INFO; libraries (orbax, absl) only when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("hetclip").setLevel(logging.INFO)
    config = _load(args, overrides)
    evaluate = evaluator_from_config(config, args.workdir)
    try:
        metrics = train(config, args.workdir, evaluate=evaluate)
    except Stopped as stop:
        print(f"[train] {stop}", file=sys.stderr)
        return 128 + stop.signum
    except NonFiniteError as error:
        print(f"hetclip: error: {error}", file=sys.stderr)
        return 3
    path = write_summary(args.workdir, metrics)
    print(f"[train] done: {json.dumps(metrics)} (also in {path})")
    return 0


def cmd_eval(args: argparse.Namespace, overrides: list[str]) -> int:
    from hetclip.config import apply_overrides
    from hetclip.eval_suites import run_ensemble, run_suite

    spec = args.config
    if spec and overrides:
        from hetclip.config import load_config

        spec = apply_overrides(load_config(spec), overrides)
    options = dict(
        config_spec=spec,
        model_name=args.model_name,
        tfds_data_dir=args.tfds_data_dir,
        folder=args.folder,
    )
    if len(args.checkpoint) > 1:
        results = run_ensemble(args.checkpoint, args.suite, args.out, **options)
    else:
        results = run_suite(args.checkpoint[0], args.suite, args.out, **options)
    for result in results:
        shown = {k: round(v, 4) for k, v in result["metrics"].items()}
        print(f"{result['dataset']} {result['task']}: {shown}")
    print(f"[eval] wrote {len(results)} result files and results.md / results.csv to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace, overrides: list[str]) -> int:
    from hetclip.train.checkpoint import read_checkpoint
    from towers.checkpoints import save_npz

    path = Path(args.checkpoint)
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    state = read_checkpoint(folder, args.step)
    out = save_npz(args.out, state["params"])
    print(f"[export] step {int(state['step'])} of {folder} -> {out} (big_vision layout)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from data_pipelines.prepare import DATASETS

    parser = argparse.ArgumentParser(
        prog="hetclip",
        description="HET-XL image-text and supervised pretraining on JAX.",
        epilog="Run 'hetclip COMMAND -h' for the options of a command.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="prepare, inspect and tokenize data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    prepare = data_commands.add_parser(
        "prepare",
        help="build an embedded data set from registry packages (idempotent)",
        description="Fetches the data set's Debian packages, unpacks what it needs, validates "
        "every image (corrupt / huge / caption-less records are skipped and counted) and writes "
        "deterministic train/validation/test shards with a manifest.",
    )
    prepare.add_argument("--name", choices=sorted(DATASETS), default="imagetext")
    prepare.add_argument("--out", help="output folder (default: $HETCLIP_DATA_DIR/NAME)")
    prepare.add_argument("--cache", help="download cache (default: $HETCLIP_DATA_DIR/_downloads)")
    prepare.add_argument(
        "--from-tree",
        type=Path,
        help="read an already unpacked package tree (a folder holding usr/share)",
    )
    prepare.add_argument("--force", action="store_true", help="rebuild even if prepared")
    prepare.add_argument("--max-side", type=int, default=160, help="longest image side stored")
    prepare.add_argument("--limit-per-source", type=int, help="keep at most N images per source")
    prepare.set_defaults(run=cmd_data_prepare)

    summary = data_commands.add_parser("summary", help="print what the prepared data sets hold")
    summary.set_defaults(run=cmd_data_summary)

    inspect = data_commands.add_parser("inspect", help="print batches of a config's pipeline")
    inspect.add_argument("--config", default="default.py", help=CONFIG_HELP)
    inspect.add_argument("--batches", type=int, default=2)
    inspect.add_argument("--pp-key", default="pp", choices=["pp", "pp_eval"])
    inspect.set_defaults(run=cmd_data_inspect)

    tok = data_commands.add_parser("train-tokenizer", help="train a sentencepiece model")
    tok.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="text files (one caption per line) or CSV/JSONL manifests",
    )
    tok.add_argument("--out", required=True, help="model prefix; writes PREFIX.model")
    tok.add_argument("--vocab-size", type=int, default=8000)
    tok.add_argument("--model-type", default="unigram", choices=["unigram", "bpe", "word", "char"])
    tok.add_argument("--lowercase", action="store_true", help="case-fold while normalising")
    tok.set_defaults(run=cmd_data_train_tokenizer)

    class_budget_commands.add_commands(commands, data_commands)

    train = commands.add_parser(
        "train",
        help="train a contrastive or supervised model",
        description="Trains what the config describes. Rerunning with the same --workdir resumes "
        "from its last checkpoint exactly. SIGTERM / Ctrl-C save a checkpoint before exiting.",
    )
    train.add_argument("--config", default="default.py", help=CONFIG_HELP)
    train.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tensorboard/")
    train.add_argument("--coordinator", default="localhost:12355", help="multi-host: host:port")
    train.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    train.add_argument("--process-id", type=int, default=0, help="multi-host: this process")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser(
        "eval",
        help="evaluate a checkpoint on a suite (CLIP_benchmark-style JSON)",
        description="Zero-shot classification and retrieval of a checkpoint: a training work "
        "directory, its checkpoints folder, or a big_vision .npz (then --config names the model).",
    )
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="repeat it to evaluate each model and their ensemble (members in OUT/member_i)",
    )
    evaluate.add_argument("--suite", default="imagetext")
    evaluate.add_argument("--config", help=CONFIG_HELP + " (default: the run's config.json)")
    evaluate.add_argument("--out", required=True, help="folder for the result files")
    evaluate.add_argument("--model-name", default="", help="the 'model' field of the results")
    evaluate.add_argument(
        "--tfds-data-dir", help="where `tfds build` put imagenet2012 / imagenet_v2 (imagenet suite)"
    )
    evaluate.add_argument("--folder", help="image folder, one sub-folder per class (folder suite)")
    evaluate.set_defaults(run=cmd_eval)

    export = commands.add_parser(
        "export", help="write a checkpoint's parameters as a big_vision-layout .npz"
    )
    export.add_argument("--checkpoint", required=True, help="work directory or checkpoints/")
    export.add_argument("--step", type=int, help="default: the latest")
    export.add_argument("--out", required=True, help="the .npz to write")
    export.set_defaults(run=cmd_export)

    config = commands.add_parser("config", help="show resolved configs")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser("show", help="print a config after overrides")
    show.add_argument("--config", default="default.py", help=CONFIG_HELP)
    show.set_defaults(run=cmd_config_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest, overrides = _split_overrides(argv)
    args = build_parser().parse_args(rest)
    try:
        return args.run(args, overrides)
    except (FileNotFoundError, KeyError, ValueError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hetclip: error: {message}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `hetclip` command: main() with its allocator set up (hetclip/allocator.py)."""
    allocator.reexec_with_allocator()
    sys.exit(main())


if __name__ == "__main__":
    entry()
