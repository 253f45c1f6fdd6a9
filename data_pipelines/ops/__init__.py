"""Preprocessing ops addressed by strings, big_vision style.

  pp = build("decode|resize(64)|value_range(-1,1)|choice|tokenize(max_len=32)|keep('image','text')")
  example = pp(example)

Importing this package registers the built-in ops (image, text, misc); `register` adds yours.
"""

from data_pipelines.ops import image, misc, text  # noqa: F401  (registers the ops)
from data_pipelines.ops.registry import OPS, build, image_part, parse_spec, register

__all__ = ["OPS", "build", "image_part", "parse_spec", "register"]
