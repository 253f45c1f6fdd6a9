"""Global-batch-aware input: per-process disjointness, (seed, step) determinism, exact resume,
eval coverage, and skipping + counting of corrupt input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipelines.input import InputPipeline, RecordOrder, global_positions
from data_pipelines.sources import StreamingSource, make_source
from data_pipelines.sources.tfrecord import TFRecordSource, example_to_bytes, write_indexed_tfrecord
from tests.helpers import bomb_png_bytes, image_bytes, truncated_image_bytes, write

NUM_RECORDS = 23
PP = "decode|resize(4)|flip_lr|value_range(0, 1)|keep('image', 'label')"


@pytest.fixture(scope="module")
def source_path(tmp_path_factory):
    records = [
        example_to_bytes(
            {"id": f"r{i}", "image": image_bytes(5, 6, seed=i), "texts": [f"t{i}"], "label": i}
        )
        for i in range(NUM_RECORDS)
    ]
    return write_indexed_tfrecord(tmp_path_factory.mktemp("rec") / "r.tfrecord", records)


def pipeline(path, **kwargs) -> InputPipeline:
    settings = {"global_batch_size": 8, "seed": 3, "process_index": 0, "process_count": 1}
    settings.update(kwargs)
    return InputPipeline(TFRecordSource(str(path)), PP, **settings)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_global_positions_partition_each_global_batch():
    shares = [global_positions(5, 12, p, 3) for p in range(3)]
    assert np.array_equal(np.concatenate(shares), np.arange(60, 72))
    with pytest.raises(ValueError, match="not divisible"):
        global_positions(0, 10, 0, 3)


def test_record_order_visits_every_record_once_per_epoch():
    order = RecordOrder(NUM_RECORDS, seed=0)
    for epoch in range(3):
        seen = [order.record(epoch * NUM_RECORDS + i) for i in range(NUM_RECORDS)]
        assert sorted(seen) == list(range(NUM_RECORDS))
    first = [order.record(i) for i in range(NUM_RECORDS)]
    second = [order.record(NUM_RECORDS + i) for i in range(NUM_RECORDS)]
    assert first != second  # a fresh permutation every epoch


def test_processes_read_disjoint_records_that_make_up_the_global_batch(source_path):
    whole = take(pipeline(source_path).batches(), 6)
    shares = [
        take(pipeline(source_path, process_index=p, process_count=2).batches(), 6) for p in range(2)
    ]
    for step in range(6):
        a, b = shares[0][step]["label"], shares[1][step]["label"]
        assert len(a) == len(b) == 4
        np.testing.assert_array_equal(np.concatenate([a, b]), whole[step]["label"])
        np.testing.assert_array_equal(
            np.concatenate([shares[0][step]["image"], shares[1][step]["image"]]),
            whole[step]["image"],
        )
    # Within an epoch (23 records, 8 per step: steps 0 and 1) no record is read twice.
    first_epoch = np.concatenate([whole[s]["label"] for s in range(2)])
    assert len(set(first_epoch.tolist())) == 16


def test_stream_is_a_function_of_seed_and_step_so_resume_is_exact(source_path):
    uninterrupted = take(pipeline(source_path).batches(), 7)
    resumed = take(pipeline(source_path).batches(start_step=4), 3)
    for a, b in zip(uninterrupted[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_array_equal(a["image"], b["image"])  # augmentations included
    other_seed = take(pipeline(source_path, seed=4).batches(), 2)
    assert not np.array_equal(other_seed[0]["label"], uninterrupted[0]["label"])


def test_batches_have_the_mesh_ready_shapes(source_path):
    batch = next(
        pipeline(source_path, process_count=4, process_index=1, global_batch_size=16).batches()
    )
    assert batch["image"].shape == (4, 4, 4, 3) and batch["image"].dtype == np.float32
    assert set(batch) == {"image", "label"}


def test_eval_pass_sees_every_record_exactly_once_over_processes(source_path):
    seen = []
    for p in range(2):
        for batch in pipeline(source_path, process_index=p, process_count=2).eval_batches():
            assert batch["label"].shape == (4,)
            seen.extend(batch["label"][batch["_mask"]].tolist())
    assert sorted(seen) == list(range(NUM_RECORDS))


@pytest.fixture
def planted_folder(tmp_path):
    """An image-folder data set with one good image per class and every kind of bad file."""
    for name in ("a", "b"):
        write(tmp_path / "data" / name / "good.png", image_bytes(seed=ord(name)))
    write(tmp_path / "data" / "a" / "truncated.png", truncated_image_bytes())
    write(tmp_path / "data" / "a" / "not_image.jpg", b"hello, I am text")
    write(tmp_path / "data" / "b" / "bomb.png", bomb_png_bytes())
    write(tmp_path / "data" / "b" / "empty.png", b"")
    return tmp_path / "data"


def test_corrupt_truncated_huge_and_empty_images_are_skipped_and_counted(planted_folder, tmp_path):
    source = make_source({"kind": "folder", "root": str(planted_folder)})
    assert len(source) == 6
    pipe = InputPipeline(source, PP, global_batch_size=4, process_index=0, process_count=1)
    batches = take(pipe.batches(), 10)
    labels = np.concatenate([b["label"] for b in batches])
    assert len(labels) == 40  # every batch full despite 4 of 6 files being bad
    assert set(labels.tolist()) == {0, 1}
    assert pipe.skips.counts == {
        "empty_file": 1,
        "not_an_image": 1,
        "too_large_image": 1,
        "truncated_image": 1,
    }  # each bad file counted once, however often the stream met it
    report = json.loads(pipe.write_skip_report(tmp_path / "run").read_text())
    assert report["total"] == 4 and report["by_reason"]["too_large_image"] == 1
    assert any("bomb.png" in e for e in report["examples"]["too_large_image"])


def test_eval_masks_out_unreadable_records_and_reports_them_at_the_end(planted_folder, tmp_path):
    source = make_source({"kind": "folder", "root": str(planted_folder)})
    pipe = InputPipeline(source, PP, global_batch_size=4, process_index=0, process_count=1)
    batches = pipe.eval_batches(report_dir=tmp_path / "eval")
    masks = np.concatenate([next(batches)["_mask"], next(batches)["_mask"]])
    assert masks.sum() == 2 and len(masks) == 8
    assert not (tmp_path / "eval" / "skipped_records.json").exists()  # written at the end
    assert list(batches) == []
    report = json.loads((tmp_path / "eval" / "skipped_records.json").read_text())
    assert report["total"] == 4


def test_missing_files_and_empty_captions_are_counted(tmp_path):
    write(tmp_path / "ok.png", image_bytes())
    write(tmp_path / "m.csv", "image,caption\nok.png,fine\ngone.png,lost\nok.png,   \n")
    source = make_source({"kind": "manifest", "path": str(tmp_path / "m.csv")})
    pipe = InputPipeline(
        source,
        "decode|first|keep('image', 'text')",
        global_batch_size=2,
        process_index=0,
        process_count=1,
    )
    batches = take(pipe.batches(), 3)
    assert all(t == b"fine" for b in batches for t in b["text"])
    assert pipe.skips.counts == {"empty_caption": 1, "missing_file": 1}


def test_mostly_broken_data_stops_with_a_clear_error(tmp_path):
    for i in range(3):
        write(tmp_path / "d" / "c" / f"{i}.png", b"broken")
    source = make_source({"kind": "folder", "root": str(tmp_path / "d")})
    pipe = InputPipeline(source, PP, global_batch_size=2, process_index=0, process_count=1)
    with pytest.raises(Exception, match="could not be read"):
        next(pipe.batches())


def test_streaming_source_resume_is_exact(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20, data_dir=str(tmp_path)):
        source = make_source({"kind": "tfds", "name": "mnist", "split": "train"})
        pp = "decode|value_range(0, 1)|keep('image', 'label')"
        pipe = InputPipeline(
            source, pp, global_batch_size=4, process_index=0, process_count=1, shuffle_buffer=16
        )
        uninterrupted = take(pipe.batches(), 5)
        resumed = take(pipe.batches(start_step=3), 2)
    for a, b in zip(uninterrupted[3:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def _mock_labels(source) -> list[int]:
    ds = source.dataset(
        process_index=0, process_count=1, seed=0, shuffle=False, drop_remainder=False
    )
    return [int(ex["label"]) for ex in ds.as_numpy_iterator()]


class RangeSource(StreamingSource):
    """Examples labelled 0..n-1; process p of P reads every P-th (shares differ by one)."""

    def __init__(self, num_examples: int | None):
        super().__init__()
        self.num_examples = num_examples

    def dataset(self, *, process_index, process_count, seed, shuffle, drop_remainder=True):
        import tensorflow as tf

        ds = tf.data.Dataset.range(11).shard(process_count, process_index)
        return ds.map(lambda i: {"label": i, "image": tf.fill([2, 2, 3], tf.cast(i, tf.uint8))})


def test_streaming_eval_pass_keeps_every_tfds_example_once_in_order(tmp_path):
    import tensorflow_datasets as tfds

    pp = "decode|value_range(0, 1)|keep('image', 'label')"
    with tfds.testing.mock_data(num_examples=11, data_dir=str(tmp_path)):
        source = make_source({"kind": "tfds", "name": "mnist", "split": "test"})
        expected = _mock_labels(source)
        batches = list(
            InputPipeline(source, pp, 4, process_index=0, process_count=1).eval_batches()
        )
    assert len(expected) == 11
    assert [len(b["_mask"]) for b in batches] == [4, 4, 4]
    assert [int(b["_mask"].sum()) for b in batches] == [4, 4, 3]
    labels = np.concatenate([b["label"][b["_mask"]] for b in batches])
    assert labels.tolist() == expected  # in order, each example once
    assert batches[-1]["image"].shape == (4, 28, 28, 3)  # decode gives RGB by default


def test_streaming_eval_processes_run_the_same_steps_and_see_everything_once():
    source = RangeSource(num_examples=11)
    per_process = [
        list(
            InputPipeline(
                source, "keep('label')", 4, process_index=p, process_count=2
            ).eval_batches()
        )
        for p in range(2)
    ]
    # 6 and 5 examples, 2 per step: both processes take 3 steps, the second pads its last one.
    assert [len(batches) for batches in per_process] == [3, 3]
    assert [int(b["_mask"].sum()) for b in per_process[1]] == [2, 2, 1]
    seen = sorted(
        int(label) for batches in per_process for b in batches for label in b["label"][b["_mask"]]
    )
    assert seen == list(range(11))


def test_multi_process_streaming_eval_needs_the_split_size():
    pipe = InputPipeline(RangeSource(None), "keep('label')", 2, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="does not know its size"):
        next(pipe.eval_batches())


FAILING_READER = """
import sys, time
import numpy as np
import tensorflow as tf
from data_pipelines.input import InputPipeline
from data_pipelines.sources.base import RandomAccessSource


class OutOfDescriptors(RandomAccessSource):
    def __len__(self):
        return 10_000

    def read(self, index):
        if index == 77:
            raise OSError(24, "Too many open files")
        time.sleep(0.001)  # reads are in flight on tf.data's threads when the error comes
        return {"label": np.int64(index)}

    def signature(self):
        return {"label": tf.TensorSpec([], tf.int64)}


pipe = InputPipeline(OutOfDescriptors(), "keep('label')", 8, process_index=0, process_count=1)
for batch in pipe.batches():
    pass
"""


def test_a_reader_error_ends_the_process_instead_of_hanging_it():
    # tf.data threads still running Python readers at interpreter shutdown used to deadlock it:
    # the error was printed and the process never exited.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", FAILING_READER],
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "InputError: The input pipeline failed" in result.stderr
    assert "Too many open files" in result.stderr
