"""The main job: from prepared data to trained HET-XL CLIP, CLIP and LiT models and a report.

  python -m hetclip.main_job                         (what `python3 run.py main` runs)
  python -m hetclip.main_job --steps 4 --size mu --res 16 --batch 8 --out /tmp/x   (test size)

Each model trains in its own work directory under --out; a rerun skips finished models (and
resumes unfinished ones from their checkpoints), then rewrites the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

# (display name, work directory name, config file, extra config arguments)
RUNS = (
    ("HET-XL CLIP", "hetxl_clip", "default.py", "hetxl=True"),
    ("CLIP (deterministic baseline)", "clip", "default.py", "hetxl=False"),
    ("LiT, locked MiniLM text tower", "lit_minilm", "lit_minilm.py", "hetxl=False"),
)


def _config(spec: str, extra: str, args: argparse.Namespace):
    from hetclip.config import load_config

    arguments = [extra] + [
        f"{key}={value}"
        for key, value in (
            ("steps", args.steps),
            ("size", args.size),
            ("res", args.res),
            ("batch", args.batch),
        )
        if value is not None
    ]
    config = load_config(f"{spec}:{','.join(arguments)}")
    config.eval_every = int(config.total_steps)  # evaluate once, at the end
    return config


def run_one(name: str, config, workdir: Path) -> dict:
    from hetclip.train.evaluators import evaluator_from_config
    from hetclip.train.loop import train, write_summary

    final = workdir / "final_metrics.json"
    if final.exists():
        print(f"[main] {name}: already trained in {workdir} (delete it to retrain)", flush=True)
        return json.loads(final.read_text())
    print(f"[main] training {name} for {config.total_steps} steps in {workdir}", flush=True)
    metrics = train(config, workdir, evaluate=evaluator_from_config(config, workdir))
    write_summary(workdir, metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/main_job", help="work directories of the runs")
    parser.add_argument("--report", default="docs/report", help="where the report goes")
    parser.add_argument("--steps", type=int, help="training steps per model (config default)")
    parser.add_argument("--size", help="tower size (Ti; mu for tests)")
    parser.add_argument("--res", type=int, help="image resolution (64)")
    parser.add_argument("--batch", type=int, help="global batch size (256)")
    parser.add_argument("--command", help=argparse.SUPPRESS)  # how the report names its command
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    from hetclip.report import write_report
    from hetclip.train.loop import Stopped

    out = Path(args.out)
    runs = []
    for name, directory, spec, extra in RUNS:
        try:
            metrics = run_one(name, _config(spec, extra, args), out / directory)
        except Stopped as stop:
            # The run saved its state; finished runs are kept, so a rerun goes on from here.
            print(f"[main] {name}: {stop} (finished runs are kept)", file=sys.stderr)
            return 128 + stop.signum
        summary = {k: round(v, 3) for k, v in metrics.items() if "acc1" in k or "@1" in k}
        print(f"[main] {name}: {summary}", flush=True)
        runs.append((name, out / directory))
    command = args.command or " ".join(["python -m hetclip.main_job", *(argv or sys.argv[1:])])
    report = write_report(runs, args.report, command=command)
    print(f"[main] report: {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
