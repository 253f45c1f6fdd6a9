"""Global-batch-aware, multi-process-correct, resumable input pipelines on tf.data.

Every training example is addressed by its global position g = step * global_batch + slot:
  epoch(g) = g // N, record(g) = permutation(seed, epoch)[g % N].
Process p of P owns slots [p * B/P, (p + 1) * B/P) of every global batch, so processes read
disjoint records, and the batch at `step` is a pure function of (seed, step): a run resumed at
step s computes its positions directly and reads exactly what an uninterrupted run would read,
without touching the records before s. Random pp ops are seeded by (seed, g) for the same reason.

A record that fails to read (corrupt, missing, empty caption) is counted in the source's
SkipCounter and its slot is refilled by a record drawn deterministically from (seed, g,
attempt), which keeps the batch shape fixed and the stream a function of (seed, step).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.records import SkipRecord
from data_pipelines.sources.base import RandomAccessSource, StreamingSource

MAX_READ_ATTEMPTS = 64
# Records read per Python call; small enough that a resumed or evaluation pass wastes little.
READ_CHUNK = 32
# Joins a record's captions while they cross from Python into the graph (ASCII unit separator).
TEXT_SEPARATOR = "\x1f"
SEPARATOR_BYTES = TEXT_SEPARATOR.encode()


class InputError(RuntimeError):
    """Reading the input failed with an error that is not a skippable record (e.g. the
    machine ran out of file descriptors); the message carries the reader's error."""


# How long a failed pipeline gets to cancel the reads in flight. Python shutting down while
# tf.data's threads still run Python readers deadlocks (the process never exits), so the error
# is raised only once the iterator is gone and its threads have wound down.
WIND_DOWN_S = 1.0


def numpy_batches(dataset) -> Iterator[dict[str, np.ndarray]]:
    """Iterates a tf.data dataset as numpy, turning a reader failure into an InputError raised
    after the pipeline's threads have stopped."""
    import gc
    import time

    iterator = dataset.as_numpy_iterator()
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001 - any reader failure ends the pipeline
            message = f"{type(error).__name__}: {error}"
            error.__traceback__ = None  # its frames hold the iterator
            del iterator, error
            gc.collect()
            time.sleep(WIND_DOWN_S)
            raise InputError(f"The input pipeline failed: {message}") from None
        yield batch


def _process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax  # only for its process topology; no model code

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count}).")
    return process_index, process_count


def local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(
            f"Global batch size {global_batch_size} is not divisible by the {process_count} "
            "processes; pick a multiple."
        )
    return global_batch_size // process_count


def global_positions(
    step: int, global_batch_size: int, process_index: int, process_count: int
) -> np.ndarray:
    """[B/P] int64: the global positions of this process's slots in the batch at `step`."""
    local = local_batch_size(global_batch_size, process_count)
    start = step * global_batch_size + process_index * local
    return np.arange(start, start + local, dtype=np.int64)


class RecordOrder:
    """Maps global positions to record indices: a fresh seeded permutation per epoch."""

    def __init__(self, num_records: int, seed: int, shuffle: bool = True):
        if num_records <= 0:
            raise ValueError("The data source is empty: no records to read.")
        self.num_records, self.seed, self.shuffle = num_records, seed, shuffle

    @functools.lru_cache(maxsize=4)  # noqa: B019 - a few epochs' permutations, per instance
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_records)

    def record(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.num_records)
        return int(self._permutation(epoch)[offset]) if self.shuffle else offset

    def fallback(self, position: int, attempt: int) -> int:
        """The record that refills `position` after `attempt` failed reads."""
        return int(
            np.random.default_rng([self.seed, position, attempt, 7]).integers(self.num_records)
        )


@dataclasses.dataclass
class InputPipeline:
    """Batches of preprocessed examples for this process, as dicts of numpy arrays.

    Attributes:
      source: where records come from.
      pp: a pp string (see data_pipelines.ops) or a function example -> example.
      global_batch_size: examples per step over all processes; each process gets B / P.
      seed: fixes the record order and all random augmentations.
      pp_defaults: keyword defaults per op, e.g. {"tokenize": {"model": "sp:/x.model"}}.
    """

    source: RandomAccessSource | StreamingSource
    pp: str | Callable[[dict], dict]
    global_batch_size: int
    seed: int = 0
    shuffle: bool = True
    process_index: int | None = None
    process_count: int | None = None
    pp_defaults: Mapping[str, Mapping[str, Any]] | None = None
    num_parallel_calls: int | None = None
    prefetch: int = 2
    shuffle_buffer: int = 10_000  # streaming sources only

    def __post_init__(self) -> None:
        from data_pipelines import hide_accelerators_from_tf

        hide_accelerators_from_tf()
        self.process_index, self.process_count = _process_layout(
            self.process_index, self.process_count
        )
        self.local_batch_size = local_batch_size(self.global_batch_size, self.process_count)
        if isinstance(self.pp, str):
            from data_pipelines import ops

            self.pp_fn = ops.build(self.pp, self.pp_defaults)
        else:
            self.pp_fn = self.pp

    @property
    def skips(self):
        return self.source.skips

    def _parallel(self):
        import tensorflow as tf

        return self.num_parallel_calls or tf.data.AUTOTUNE

    # --- random-access sources -------------------------------------------------------------

    def _read_record(self, position: int, order: RecordOrder | None, eval_size: int | None):
        """(record dict, valid) for one global position; see the module docstring."""
        source = self.source
        if order is not None:  # training: refill failed slots with fallback records
            index = order.record(position)
            for attempt in range(1, MAX_READ_ATTEMPTS + 1):
                try:
                    return source.read(index), True
                except SkipRecord as e:
                    source.skips.add(e.reason, f"record {index}: {e.detail}", key=index)
                    index = order.fallback(position, attempt)
            raise RuntimeError(
                f"{MAX_READ_ATTEMPTS} records in a row could not be read "
                f"({source.skips.summary()}); the data looks mostly broken."
            )
        if position < eval_size:  # evaluation: padding and unreadable slots are masked out
            try:
                return source.read(position), True
            except SkipRecord as e:
                source.skips.add(e.reason, f"record {position}: {e.detail}", key=position)
        return self._placeholder_record, False

    def _read_chunk_fn(self, order: RecordOrder | None, eval_size: int | None):
        """A numpy function [k] positions -> one [k] array per field (+ [k] validity flags).

        Reading a chunk per call amortises the Python call overhead of tf.numpy_function. A
        list-of-strings field (texts) travels joined by TEXT_SEPARATOR and is split in-graph.
        """
        keys = sorted(self.source.signature())
        signature = self.source.signature()
        lists = {k for k, spec in signature.items() if spec.shape.rank == 1}
        strings = {k: spec.dtype.name == "string" for k, spec in signature.items()}
        dtypes = {k: spec.dtype.as_numpy_dtype for k, spec in signature.items()}

        def as_bytes(value) -> bytes:
            return value if isinstance(value, bytes) else str(value).encode("utf-8")

        def read_chunk(positions: np.ndarray):
            records, valid = [], []
            for position in positions.tolist():
                record, ok = self._read_record(position, order, eval_size)
                records.append(record)
                valid.append(ok)
            out = []
            for k in keys:
                if k in lists:
                    column = [SEPARATOR_BYTES.join(as_bytes(v) for v in r[k]) for r in records]
                elif strings[k]:
                    column = [as_bytes(r[k]) for r in records]
                else:
                    out.append(np.asarray([r[k] for r in records], dtype=dtypes[k]))
                    continue
                # object arrays: numpy's fixed-width bytes type would drop trailing NUL bytes
                array = np.empty(len(column), dtype=object)
                array[:] = column
                out.append(array)
            return out + [np.asarray(valid, dtype=np.bool_)]

        return read_chunk, keys, lists

    @functools.cached_property
    def _placeholder_record(self) -> dict[str, Any]:
        for index in range(len(self.source)):
            try:
                return self.source.read(index)
            except SkipRecord:
                continue
        raise RuntimeError(f"No readable record in {self.source.describe()}.")

    def _random_access_dataset(self, positions, order: RecordOrder | None, eval_size=None):
        import tensorflow as tf

        signature = self.source.signature()
        read_chunk, keys, lists = self._read_chunk_fn(order, eval_size)
        seed = self.seed

        def load_chunk(chunk):
            values = tf.numpy_function(
                read_chunk,
                [chunk],
                [signature[k].dtype for k in keys] + [tf.bool],
                stateful=False,
            )
            fields = {k: tf.ensure_shape(v, [None]) for k, v in zip(keys, values[:-1], strict=True)}
            fields["_mask"] = tf.ensure_shape(values[-1], [None])
            fields["_position"] = chunk
            return fields

        def prepare(fields):
            raw = {
                k: tf.strings.split(fields[k], TEXT_SEPARATOR) if k in lists else fields[k]
                for k in keys
            }
            example = self.source.parse(raw)
            example["_rng"] = tf.stack([tf.constant(seed, tf.int64), fields["_position"]])
            example["_mask"] = fields["_mask"]
            return self.pp_fn(example)

        options = tf.data.Options()
        options.deterministic = True
        chunks = positions.batch(READ_CHUNK).map(load_chunk, num_parallel_calls=self._parallel())
        return (
            chunks.unbatch().map(prepare, num_parallel_calls=self._parallel()).with_options(options)
        )

    def _positions(self, start_step: int, num_steps: int | None):
        """tf.data stream of this process's global positions from `start_step` on."""
        import tensorflow as tf

        gbs, local, p = self.global_batch_size, self.local_batch_size, self.process_index
        start = start_step * local
        stop = None if num_steps is None else (start_step + num_steps) * local
        counter = (
            tf.data.Dataset.range(start, stop)
            if stop is not None
            else (tf.data.Dataset.range(start, np.iinfo(np.int64).max))
        )
        return counter.map(lambda c: (c // local) * gbs + p * local + c % local)

    # --- public iteration ------------------------------------------------------------------

    def dataset(self, start_step: int = 0):
        """The infinite training stream as a batched tf.data.Dataset, starting at `start_step`."""
        import tensorflow as tf

        if isinstance(self.source, StreamingSource):
            ds = self._streaming_dataset(start_step)
        else:
            order = RecordOrder(len(self.source), self.seed, self.shuffle)
            ds = self._random_access_dataset(self._positions(start_step, None), order)
        ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k not in ("_mask", "_rng")})
        return ds.batch(self.local_batch_size, drop_remainder=True).prefetch(
            self.prefetch or tf.data.AUTOTUNE
        )

    def batches(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Training batches [B/P, ...] from `start_step` on; the same for the same (seed, step)."""
        return numpy_batches(self.dataset(start_step))

    def _streaming_dataset(self, start_step: int):
        import tensorflow as tf

        source: StreamingSource = self.source  # type: ignore[assignment]
        ds = source.dataset(
            process_index=self.process_index,
            process_count=self.process_count,
            seed=self.seed,
            shuffle=self.shuffle,
        ).repeat()
        if self.shuffle:
            ds = ds.shuffle(self.shuffle_buffer, seed=self.seed)
        # Skipping happens before decode (images are still encoded bytes), so it only reads.
        skip = start_step * self.local_batch_size
        ds = tf.data.Dataset.zip((ds.skip(skip), self._positions(start_step, None)))
        seed = self.seed

        def prepare(example, position):
            example = dict(example)
            example["_rng"] = tf.stack([tf.constant(seed, tf.int64), position])
            example["_mask"] = tf.constant(True)
            return self.pp_fn(example)

        options = tf.data.Options()
        options.deterministic = True
        return ds.map(prepare, num_parallel_calls=self._parallel()).with_options(options)

    def eval_batches(self, report_dir: str | Path | None = None) -> Iterator[dict[str, np.ndarray]]:
        """One ordered pass over the source in fixed-shape batches with a boolean `_mask`.

        Every record appears exactly once over all processes with `_mask` True; the last batch is
        padded (mask False), and so are records that could not be read (counted in `skips`).
        At the end of the pass the skip counts are logged and, with `report_dir`, written there.
        """
        import tensorflow as tf

        if isinstance(self.source, StreamingSource):
            yield from self._streaming_eval_batches()
            logging.info("end of pass over %s", self.source.describe())
            return
        size = len(self.source)
        num_steps = -(-size // self.global_batch_size)
        ds = self._random_access_dataset(self._positions(0, num_steps), None, eval_size=size)
        ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k != "_rng"})
        ds = ds.batch(self.local_batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        yield from numpy_batches(ds)
        logging.info("end of pass over %s: %s", self.source.describe(), self.skips.summary())
        if report_dir is not None:
            self.write_skip_report(report_dir)

    def _streaming_eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """One in-order pass over this process's share of a streaming source (TFDS).

        The shares of P processes differ by at most one example, but every process must run the
        same number of steps, so with P > 1 the count comes from the source's known size and
        short shares are padded with masked batches."""
        import tensorflow as tf

        source: StreamingSource = self.source  # type: ignore[assignment]
        num_steps = None
        if self.process_count > 1:
            size = getattr(source, "num_examples", None)
            if not size:
                raise ValueError(
                    f"{source.describe()} does not know its size, which a multi-process "
                    "evaluation needs to agree on a step count; evaluate in one process."
                )
            largest_share = -(-size // self.process_count)
            num_steps = -(-largest_share // self.local_batch_size)
        ds = source.dataset(
            process_index=self.process_index,
            process_count=self.process_count,
            seed=self.seed,
            shuffle=False,
            drop_remainder=False,
        )
        seed = self.seed

        def prepare(position, example):
            example = dict(example)
            example["_rng"] = tf.stack([tf.constant(seed, tf.int64), position])
            example["_mask"] = tf.constant(True)
            example = self.pp_fn(example)
            return {k: v for k, v in example.items() if k != "_rng"}

        ds = ds.enumerate().map(prepare, num_parallel_calls=self._parallel())
        ds = ds.batch(self.local_batch_size).prefetch(tf.data.AUTOTUNE)
        steps, padding = 0, None
        for batch in numpy_batches(ds):
            missing = self.local_batch_size - len(batch["_mask"])
            if padding is None:
                padding = {k: np.zeros_like(v[:1]) for k, v in batch.items()}
            if missing:
                batch = {
                    k: np.concatenate([v, np.repeat(padding[k], missing, axis=0)])
                    for k, v in batch.items()
                }
            yield batch
            steps += 1
        if padding is None:
            raise ValueError(f"{source.describe()}: this process's share of the split is empty.")
        while num_steps is not None and steps < num_steps:
            yield {k: np.repeat(v, self.local_batch_size, axis=0) for k, v in padding.items()}
            steps += 1

    def write_skip_report(self, directory: str | Path, name: str = "skipped_records.json") -> Path:
        """Writes the skip counts next to a run's outputs and returns the file."""
        return self.skips.write(Path(directory) / name)


def pipeline_from_config(
    input_config: Mapping[str, Any],
    *,
    pp_key: str = "pp",
    split: str | None = None,
    seed: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> InputPipeline:
    """An InputPipeline from a config's `input` section (see hetclip/configs/default.py).

    Keys: data (a source spec for make_source), batch_size, pp / pp_eval, shuffle, tokenizer
    (a tokenizer spec; '{data_dir}' expands to the prepared-data root).
    """
    from data_pipelines.paths import data_dir
    from data_pipelines.sources import make_source

    data = dict(input_config["data"])
    if split is not None:
        data["split"] = split
    defaults = {}
    if input_config.get("tokenizer"):
        defaults["tokenize"] = {"model": input_config["tokenizer"].format(data_dir=data_dir())}
    return InputPipeline(
        source=make_source(data),
        pp=input_config[pp_key],
        global_batch_size=int(input_config["batch_size"]),
        seed=seed,
        shuffle=bool(input_config.get("shuffle", True)),
        process_index=process_index,
        process_count=process_count,
        pp_defaults=defaults,
    )
