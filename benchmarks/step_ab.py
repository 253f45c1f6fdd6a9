"""Whole hetclip training steps built with one function of a module swapped, timed in turn.

Used by dense_layout.py --step and attention.py --step: builds the hetclip step of a
vs_open_clip.py setup once per variant (the towers look the swapped function up whenever they
are traced, so it only has to be in place until the step is compiled) and times the compiled
steps in turn, so the machine's drift hits every variant alike.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name: str):
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def best_in_turn(calls: dict, rounds: int, per_round: int) -> dict:
    """{name: best seconds} of callables run in turn, `per_round` calls each per round."""
    best = {name: float("inf") for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def compare_steps(only: str, rounds: int, module, attribute: str, variants: dict) -> tuple:
    """(setup name, {variant: best s / step}) for the vs_open_clip.py setup whose name starts
    with `only`, its step built with module.attribute set to each of `variants`' values."""

    @contextlib.contextmanager
    def swapped(value):
        original = getattr(module, attribute)
        setattr(module, attribute, value)
        try:
            yield
        finally:
            setattr(module, attribute, original)

    return compare_steps_in(only, rounds, {v: lambda v=v: swapped(variants[v]) for v in variants})


def compare_steps_in(only: str, rounds: int, contexts: dict) -> tuple:
    """(setup name, {variant: best s / step}) for the vs_open_clip.py setup whose name starts
    with `only`, its step built (traced and compiled) inside each of `contexts`' context
    managers (values: functions that return one)."""
    import jax

    vs_open_clip = load("vs_open_clip")
    (name,) = [n for n in vs_open_clip.SETUPS if n.startswith(only)][:1]
    built = {}
    for variant, context in contexts.items():
        with context():
            step, state, inputs, _, _ = vs_open_clip.build_hetclip_step(name)
            step = step.lower(state, inputs).compile()
        jax.block_until_ready((state, inputs))  # so that steps run inline (hetclip/allocator.py)
        state, metrics = step(state, inputs)  # warm-up
        jax.block_until_ready(metrics)
        built[variant] = [step, state, inputs]

    def call(variant: str) -> None:
        step, state, inputs = built[variant]
        built[variant][1], metrics = step(state, inputs)
        jax.block_until_ready(metrics)

    return name, best_in_turn({v: (lambda v=v: call(v)) for v in built}, rounds, 2)


def report(name: str, best: dict, reference: str, variant: str) -> None:
    """Prints compare_steps' result: both variants' best step and the reference's time over
    the variant's (the variant's speed-up)."""
    print(
        f"{name}: {reference} {best[reference]:.3f} s / step, {variant} {best[variant]:.3f} s / "
        f"step, speed-up {best[reference] / best[variant]:.3f}",
        flush=True,
    )


def main(description: str, parts, steps, rounds: int) -> None:
    """The command line of the A/B scripts: `parts(rounds)` by default (the changed part alone),
    `steps(setup, rounds)` with --step SETUP (whole vs_open_clip.py steps)."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--step", help="time whole steps of the vs_open_clip.py setup so named")
    args = parser.parse_args()
    if args.step:
        steps(args.step, args.rounds)
    else:
        parts(args.rounds)
