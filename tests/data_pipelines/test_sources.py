"""Every source yields the same example dict; errors name the problem and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipelines.records import SkipRecord
from data_pipelines.sources import make_source
from data_pipelines.sources.tfrecord import (
    TFRecordSource,
    build_index,
    example_to_bytes,
    parse_example,
    prepared_source,
    write_indexed_tfrecord,
)
from data_pipelines.sources.webdataset import expand_braces
from tests.helpers import image_bytes, write, write_tar

EXAMPLE_KEYS = {"id", "image", "texts", "label", "source", "category"}


def _texts(example) -> list[str]:
    return [t.decode() if isinstance(t, bytes) else t for t in example["texts"]]


def test_image_folder_labels_classes_in_sorted_order(tmp_path):
    for name in ("zebra", "ant_eater"):
        for i in range(2):
            write(tmp_path / name / f"{i}.png", image_bytes(seed=i))
    write(tmp_path / "zebra" / "notes.txt", "not an image file: ignored")
    source = make_source({"kind": "folder", "root": str(tmp_path)})
    assert source.classes == ["ant_eater", "zebra"]
    assert len(source) == 4
    examples = [source.read(i) for i in range(len(source))]
    assert set(examples[0]) == EXAMPLE_KEYS
    assert [int(e["label"]) for e in examples] == [0, 0, 1, 1]
    assert _texts(examples[0]) == ["ant eater"]
    assert examples[3]["id"] == "zebra/1.png"
    assert examples[0]["image"] == (tmp_path / "ant_eater" / "0.png").read_bytes()


def test_image_folder_missing_root_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder of images per class"):
        make_source({"kind": "folder", "root": str(tmp_path / "nope")})


def test_csv_manifest_reads_relative_paths_and_several_caption_columns(tmp_path):
    write(tmp_path / "img" / "a.png", image_bytes(seed=1))
    write(tmp_path / "img" / "b.jpg", image_bytes(fmt="JPEG", seed=2))
    write(
        tmp_path / "pairs.csv",
        "image,caption,caption_2,category\nimg/a.png,a red fox, a fox ,animals\n"
        "img/b.jpg,a blue car,,vehicles\n",
    )
    source = make_source({"kind": "manifest", "path": str(tmp_path / "pairs.csv")})
    assert len(source) == 2
    first, second = source.read(0), source.read(1)
    assert _texts(first) == ["a red fox", "a fox"]
    assert _texts(second) == ["a blue car"]
    assert first["category"] == "animals" and first["id"] == "img/a.png"
    assert int(first["label"]) == -1


def test_jsonl_manifest_with_caption_lists_labels_and_bad_rows(tmp_path):
    write(tmp_path / "x.png", image_bytes())
    rows = [
        {"image": "x.png", "captions": ["one", "two"], "label": 3, "id": "ex1"},
        "this line is not an object",
        {"image": "x.png", "caption": "solo", "label": 1},
    ]
    write(tmp_path / "m.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n{broken json\n")
    source = make_source({"kind": "manifest", "path": str(tmp_path / "m.jsonl")})
    assert len(source) == 2
    assert source.skips.counts == {"malformed_manifest_row": 2}
    first = source.read(0)
    assert _texts(first) == ["one", "two"] and int(first["label"]) == 3 and first["id"] == "ex1"
    assert _texts(source.read(1)) == ["solo"]


def test_csv_manifest_without_image_column_is_a_clear_error(tmp_path):
    write(tmp_path / "m.csv", "path,caption\na.png,x\n")
    with pytest.raises(ValueError, match="no 'image' column"):
        make_source({"kind": "manifest", "path": str(tmp_path / "m.csv")})


def test_webdataset_groups_members_by_key_across_shards(tmp_path):
    write_tar(
        tmp_path / "s-000.tar",
        {
            "d/0001.jpg": image_bytes(fmt="JPEG", seed=1),
            "d/0001.txt": b"first caption\nsecond caption\n",
            "d/0002.png": image_bytes(seed=2),
            "d/0002.json": json.dumps({"caption": "from json", "category": "c"}).encode(),
            "d/0002.cls": b"7\n",
        },
    )
    write_tar(
        tmp_path / "s-001.tar",
        {"0003.webp.txt": b"odd", "0003.png": image_bytes(seed=3), "0003.txt": b"third"},
    )
    source = make_source({"kind": "webdataset", "shards": str(tmp_path / "s-{000..001}.tar")})
    assert len(source) == 3
    a, b, c = (source.read(i) for i in range(3))
    assert a["id"] == "d/0001" and _texts(a) == ["first caption", "second caption"]
    assert _texts(b) == ["from json"] and int(b["label"]) == 7 and b["category"] == "c"
    assert c["source"] == "s-001" and _texts(c) == ["third"]
    assert b["image"] == image_bytes(seed=2)


def test_webdataset_brace_expansion_keeps_zero_padding():
    assert expand_braces("a-{08..10}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_webdataset_cut_off_shard_keeps_complete_samples_and_counts(tmp_path):
    members = {f"{i:04d}.png": image_bytes(seed=i) for i in range(6)}
    members.update({f"{i:04d}.txt": f"caption {i}".encode() for i in range(6)})
    path = write_tar(tmp_path / "s.tar", members)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])  # cut inside a later member
    source = make_source({"kind": "webdataset", "shards": str(path)})
    readable = []
    for i in range(len(source)):
        try:
            readable.append(source.read(i)["id"])
        except SkipRecord as e:
            assert e.reason in ("truncated_member", "sample_without_image", "empty_caption")
    assert 1 <= len(readable) < 6
    assert readable[0] == "0000"


def test_tfrecord_round_trip_and_parse(tmp_path):
    import tensorflow as tf

    examples = [
        {
            "id": f"e{i}",
            "image": image_bytes(seed=i),
            "texts": [f"t{i}", "x"],
            "label": i,
            "source": "s",
            "category": "c",
        }
        for i in range(5)
    ]
    path = write_indexed_tfrecord(tmp_path / "a.tfrecord", [example_to_bytes(e) for e in examples])
    source = TFRecordSource(str(path))
    assert len(source) == 5
    raw = source.read(3)
    parsed = parse_example(tf.constant(raw["serialized"]))
    assert parsed["id"].numpy() == b"e3"
    assert [t.decode() for t in parsed["texts"].numpy()] == ["t3", "x"]
    assert int(parsed["label"]) == 3
    assert parsed["image"].numpy() == examples[3]["image"]
    # The files are plain TFRecords: TF's own reader sees the same records.
    assert sum(1 for _ in tf.data.TFRecordDataset(str(path))) == 5


def test_foreign_tfrecord_gets_an_index_built(tmp_path):
    import tensorflow as tf

    path = tmp_path / "foreign.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(4):
            writer.write(example_to_bytes({"id": f"f{i}", "image": b"x", "texts": ["t"]}))
    source = make_source({"kind": "tfrecord", "files": str(tmp_path / "*.tfrecord")})
    assert len(source) == 4
    assert (tmp_path / "foreign.tfrecord.idx.npy").exists()
    assert np.array_equal(build_index(path), np.load(tmp_path / "foreign.tfrecord.idx.npy"))


def test_tfrecord_detects_a_corrupted_record(tmp_path):
    records = [
        example_to_bytes({"id": f"e{i}", "image": b"abc" * 50, "texts": ["t"]}) for i in range(3)
    ]
    path = write_indexed_tfrecord(tmp_path / "a.tfrecord", records)
    data = bytearray(path.read_bytes())
    offset = int(np.load(str(path) + ".idx.npy")[1, 0])
    data[offset + 20] ^= 0xFF  # flip bits inside record 1's payload
    path.write_bytes(bytes(data))
    source = TFRecordSource(str(path))
    source.read(0), source.read(2)
    with pytest.raises(SkipRecord) as info:
        source.read(1)
    assert info.value.reason == "corrupt_record"


def test_prepared_source_missing_says_how_to_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hetclip data prepare --name imagetext"):
        prepared_source("imagetext", "train")


def test_unknown_source_kind_suggests_the_nearest(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'folder'"):
        make_source({"kind": "foldr", "root": str(tmp_path)})
    with pytest.raises(ValueError, match="no 'kind'"):
        make_source({"root": str(tmp_path)})
    with pytest.raises(ValueError, match="Bad arguments"):
        make_source({"kind": "folder", "rooot": str(tmp_path)})


def test_tfds_source_reads_mock_data_in_the_example_layout(tmp_path):
    import tensorflow_datasets as tfds

    from data_pipelines import ops

    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
        source = make_source({"kind": "tfds", "name": "mnist", "split": "train"})
        ds = source.dataset(process_index=0, process_count=1, seed=0, shuffle=False)
        examples = list(ds.as_numpy_iterator())
        decoded = ds.map(ops.build("decode(channels=1)")).take(1).get_single_element()
    assert len(examples) == 12
    example = examples[0]
    assert set(example) == EXAMPLE_KEYS
    assert isinstance(example["image"], bytes)  # still encoded: decoding is a pp op
    assert 0 <= example["label"] < 10 and example["source"] == b"mnist"
    assert tuple(decoded["image"].shape) == (28, 28, 1)


def test_tfds_source_gives_each_process_its_own_share():
    source = make_source({"kind": "tfds", "name": "mnist", "split": "train"})
    shares = [source.process_split(i, 4) for i in range(4)]
    assert [(s.split, s.index, s.count) for s in shares] == [("train", i, 4) for i in range(4)]


def test_tfds_source_missing_data_set_says_how_to_build_it(tmp_path):
    source = make_source(
        {"kind": "tfds", "name": "mnist", "split": "train", "data_dir": str(tmp_path)}
    )
    with pytest.raises(FileNotFoundError, match="tfds build mnist"):
        source.dataset(process_index=0, process_count=1, seed=0, shuffle=False)


def test_reader_threads_share_one_descriptor_per_file_and_it_closes_with_the_source(tmp_path):
    import gc
    import os
    from concurrent.futures import ThreadPoolExecutor

    from data_pipelines.sources.tfrecord import TFRecordSource

    records = [
        example_to_bytes({"id": f"r{i}", "image": b"x", "texts": ["t"], "label": i})
        for i in range(40)
    ]
    path = write_indexed_tfrecord(tmp_path / "r.tfrecord", records)

    def open_count() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_count()
    source = TFRecordSource(str(path))
    with ThreadPoolExecutor(8) as pool:  # 8 reader threads, as tf.data would use
        assert len(list(pool.map(source.read, range(40)))) == 40
    assert open_count() - before == 1
    del source
    gc.collect()
    assert open_count() == before
