"""`hetclip data prepare` on planted package trees laid out like the real Debian packages."""

from __future__ import annotations

import functools
import gzip
import io
import json
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image

from data_pipelines.prepare import fashion_mnist, imagetext
from data_pipelines.prepare.debs import fetch_debs, unpack_deb
from data_pipelines.sources.tfrecord import prepared_source
from hetclip.cli import main as cli_main
from tests.helpers import write
from tests.planted_packages import fake_render


def test_collectors_read_captions_categories_and_drop_noise(imagetext_tree):
    from data_pipelines.records import SkipCounter

    skips = SkipCounter()
    tux = {it["id"]: it for it in imagetext.collect_tuxpaint(imagetext_tree, skips)}
    mirror = tux["tuxpaint/group0/kind0/stamp0_mirror.png"]
    assert mirror["texts"] == ["A stamp of kind 0 number 0."]
    assert mirror["group"] == tux["tuxpaint/group0/kind0/stamp0.png"]["group"]
    assert mirror["category"] == "group0/kind0"
    assert skips.counts == {"empty_caption": 1}  # the orphan stamp
    clips = {it["id"]: it for it in imagetext.collect_openclipart(imagetext_tree, skips)}
    noisy = clips["openclipart/topic0/clip_00_01.png"]
    clean = clips["openclipart/topic1/clip_26_01.png"]
    assert "gramastar" not in noisy["texts"] and noisy["texts"][0] == "desc 0"
    assert clean["texts"][0] == "title 26" and "kw26, tool" in clean["texts"]
    assert noisy["texts"][-1] == "clip, topic0"
    emoji = {it["id"]: it for it in imagetext.collect_emoji(imagetext_tree, skips)}
    assert set(emoji) == {"emoji/1F431", "emoji/1F408", "emoji/1F44B", "emoji/1F44B-1F3FB"}
    assert emoji["emoji/1F431"]["texts"] == ["cat face", "cat | face | pet"]
    assert emoji["emoji/1F44B-1F3FB"]["texts"][1] == "hand | wave | waving"
    assert emoji["emoji/1F44B-1F3FB"]["group"] == emoji["emoji/1F44B"]["group"]
    assert emoji["emoji/1F408"]["category"] == "animal-mammal"


def test_prepared_imagetext_has_deterministic_disjoint_splits(prepared_imagetext):
    manifest = json.loads((prepared_imagetext / "manifest.json").read_text())
    splits = manifest["splits"]
    assert set(splits) == {"train", "validation", "test", "heldout"}
    total = sum(s["count"] for s in splits.values())
    assert total == 72 + 1 + 30 + 4  # stamps + mirror + clip art + emoji
    assert manifest["skipped"]["by_reason"] == {
        "duplicate_image": 1,
        "empty_caption": 1,
        "too_large_image": 1,
    }
    assert json.loads((prepared_imagetext / "skipped_records.json").read_text())["total"] == 3
    held = set(manifest["categories"]["heldout"])
    assert held and not held & set(manifest["categories"]["train"])
    assert (prepared_imagetext / "tokenizer.model").exists()
    ids = {}
    for split in splits:
        source = prepared_source("imagetext", split, root=str(prepared_imagetext))
        ids[split] = {_id(source.read(i)) for i in range(len(source))}
    assert sum(len(v) for v in ids.values()) == total  # no example in two splits


def test_split_assignment_is_deterministic_and_keeps_groups_together():
    items = [
        {"source": "s", "category": f"c{i % 7}", "group": f"g{i // 2}", "id": str(i)}
        for i in range(200)
    ]
    first, again = imagetext.assign_splits(items), imagetext.assign_splits(list(reversed(items)))
    split_of = {it["id"]: name for name, its in first.items() for it in its}
    assert split_of == {it["id"]: name for name, its in again.items() for it in its}
    for i in range(0, 200, 2):
        if split_of[str(i)] != "heldout":
            assert split_of[str(i)] == split_of[str(i + 1)]  # one group, one split
    assert 100 < len(first["train"]) + len(first["heldout"]) < 200


def _id(record) -> str:
    import tensorflow as tf

    from data_pipelines.sources.tfrecord import parse_example

    return parse_example(tf.constant(record["serialized"]))["id"].numpy().decode()


def test_prepared_images_are_small_opaque_jpegs(prepared_imagetext):
    import tensorflow as tf

    from data_pipelines.sources.tfrecord import parse_example

    source = prepared_source("imagetext", "train", root=str(prepared_imagetext))
    example = parse_example(tf.constant(source.read(0)["serialized"]))
    image = Image.open(io.BytesIO(example["image"].numpy()))
    assert image.format == "JPEG" and image.mode == "RGB" and max(image.size) <= 16


def test_prepare_command_is_idempotent_and_keeps_old_data_on_failure(
    prepared_imagetext, monkeypatch, capsys, imagetext_tree
):
    monkeypatch.setenv("HETCLIP_DATA_DIR", str(prepared_imagetext.parent))
    assert cli_main(["data", "prepare", "--name", "imagetext"]) == 0
    assert "already prepared" in capsys.readouterr().out
    before = (prepared_imagetext / "manifest.json").read_text()

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("data_pipelines.prepare.writing.ShardWriter.close", explode)
    monkeypatch.setattr(
        imagetext, "prepare", functools.partial(imagetext.prepare, renderer=fake_render)
    )
    with pytest.raises(RuntimeError, match="disk full"):
        cli_main(
            [
                "data",
                "prepare",
                "--name",
                "imagetext",
                "--force",
                "--from-tree",
                str(imagetext_tree),
                "--max-side",
                "16",
            ]
        )
    # Nothing already written is lost when a rebuild fails.
    assert (prepared_imagetext / "manifest.json").read_text() == before
    assert cli_main(["data", "summary"]) == 0
    out = capsys.readouterr().out
    assert "held-out categories" in out and "fashion_mnist: not prepared" in out


def _idx(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files(tmp_path):
    folder = tmp_path / "tree" / fashion_mnist.FOLDER
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 120), ("t10k", 12)):
        write(folder / f"{prefix}-images-idx3-ubyte.gz", _idx(rng.integers(0, 255, (n, 28, 28))))
        write(folder / f"{prefix}-labels-idx1-ubyte.gz", _idx(np.arange(n) % 10))
    out = fashion_mnist.prepare(tmp_path / "fm", cache=tmp_path / "c", tree=tmp_path / "tree")
    manifest = json.loads((out / "manifest.json").read_text())
    counts = {k: v["count"] for k, v in manifest["splits"].items()}
    assert counts["test"] == 12 and counts["train"] + counts["validation"] == 120
    assert counts["validation"] > 0
    assert manifest["classes"][9] == "Ankle boot"
    write(folder / "t10k-labels-idx1-ubyte.gz", gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09"))
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist.read_idx(folder / "t10k-labels-idx1-ubyte.gz")


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def test_unpack_deb_writes_only_wanted_members(tmp_path):
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w:xz") as tar:
        for name, data in (("./usr/share/x/keep.txt", b"yes"), ("./usr/share/x/skip.ogg", b"no")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (
            ("./usr/share/x/same.txt", "keep.txt"),
            ("./usr/share/x/escape.txt", "../../../../etc/passwd"),
        ):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
    deb = tmp_path / "pkg_1.0_all.deb"
    deb.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.xz", b"c")
        + _ar_member("data.tar.xz", payload.getvalue())
    )
    written = unpack_deb(deb, tmp_path / "out", lambda n: n.endswith(".txt"))
    assert written == 2
    assert (tmp_path / "out/usr/share/x/keep.txt").read_bytes() == b"yes"
    assert (tmp_path / "out/usr/share/x/same.txt").is_symlink()  # links inside the package kept
    assert not (tmp_path / "out/usr/share/x/escape.txt").exists()  # links out of it never
    assert not (tmp_path / "out/usr/share/x/skip.ogg").exists()
    assert fetch_debs(["pkg"], tmp_path) == {"pkg": deb}  # cached: nothing is downloaded
    (tmp_path / "bad.deb").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a Debian package"):
        unpack_deb(tmp_path / "bad.deb", tmp_path / "out", lambda n: True)
