"""Class names for all 21,843 ImageNet-21k classes, derived from WordNet lemmas.

The class order (Google's imagenet21k synset list, the order of TFDS / big_vision labels) and
each synset's WordNet lemmas and definition come as data files inside the `timm` wheel
(timm/data/_info/), read without importing timm (which would import torch). The class name is
the first lemma; where two classes share it (WordNet has many homonyms: "crane" the bird and
the machine), the second lemma or the head of the definition is added so that every name is
unique and a prompt can tell the classes apart.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
from pathlib import Path

NUM_CLASSES = 21_843


def _info_dir() -> Path:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "ImageNet-21k class names need the synset files of the `timm` wheel: "
            "`pip install --no-deps timm==1.0.31` (python3 run.py installs it)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"


def _table(path: Path) -> dict[str, str]:
    rows = (line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines())
    return {row[0]: row[1].strip() for row in rows if len(row) == 2}


@functools.lru_cache(maxsize=1)
def imagenet21k_synsets() -> tuple[str, ...]:
    """The 21,843 WordNet ids (n01440764, ...) in label order."""
    synsets = tuple((_info_dir() / "imagenet21k_goog_synsets.txt").read_text().split())
    if len(synsets) != NUM_CLASSES:
        raise ValueError(f"Expected {NUM_CLASSES} ImageNet-21k synsets, found {len(synsets)}.")
    return synsets


@functools.lru_cache(maxsize=1)
def imagenet21k_class_names() -> tuple[str, ...]:
    """21,843 unique, prompt-ready class names in label order."""
    info = _info_dir()
    lemmas = _table(info / "imagenet_synset_to_lemma.txt")
    definitions = _table(info / "imagenet_synset_to_definition.txt")
    synsets = imagenet21k_synsets()
    words = {s: [w.strip().replace("_", " ") for w in lemmas[s].split(",")] for s in synsets}
    first = collections.Counter(words[s][0] for s in synsets)
    names = []
    for synset in synsets:
        name = words[synset][0]
        if first[name] > 1:
            extra = words[synset][1] if len(words[synset]) > 1 else ""
            if not extra or extra == name:
                extra = definitions.get(synset, synset).split(";")[0].split(",")[0][:40]
            name = f"{name} ({extra})"
        names.append(name)
    # Rare leftovers (same first and second lemma) get their id, so names stay unique.
    counts = collections.Counter(names)
    return tuple(f"{n} [{s}]" if counts[n] > 1 else n for n, s in zip(names, synsets, strict=True))
