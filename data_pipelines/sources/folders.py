"""Image folders with one sub-folder per class (the ImageNet / torchvision layout).

root/<class name>/**/<image file>: the label is the class's index in the sorted class names and
the single text is the class name with '_' and '-' turned into spaces (usable as a caption).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from data_pipelines.images import DEFAULT_MAX_PIXELS
from data_pipelines.sources.base import RandomAccessSource
from data_pipelines.sources.common import (
    IMAGE_EXTENSIONS,
    ImageChecks,
    example_signature,
    make_example,
    read_file,
)


class ImageFolderSource(RandomAccessSource):
    def __init__(
        self,
        root: str,
        classes: list[str] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        full_decode: bool = True,
    ):
        super().__init__()
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"Image folder {self.root} does not exist. Point 'root' at a folder holding one "
                "sub-folder of images per class."
            )
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        missing = sorted(set(self.classes) - set(found))
        if missing:
            raise FileNotFoundError(f"Class folders {missing} are missing under {self.root}.")
        if not self.classes:
            raise ValueError(f"{self.root} has no class sub-folders.")
        self.files: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            for dirpath, _, filenames in sorted(os.walk(self.root / name)):
                for filename in sorted(filenames):
                    if filename.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS:
                        self.files.append((os.path.join(dirpath, filename), label))
        self.check = ImageChecks(max_pixels, full_decode)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> dict[str, Any]:
        path, label = self.files[index]
        name = self.classes[label]
        return make_example(
            id=os.path.relpath(path, self.root),
            image=self.check(read_file(path), where=path),
            texts=[name.replace("_", " ").replace("-", " ")],
            label=label,
            source=self.root.name,
            category=name,
        )

    def class_names(self) -> list[str]:
        """The class folders' names, in label order."""
        return list(self.classes)

    def signature(self) -> dict[str, Any]:
        return example_signature()

    def describe(self) -> str:
        return f"ImageFolderSource({self.root}: {len(self.classes)} classes, {len(self)} images)"
