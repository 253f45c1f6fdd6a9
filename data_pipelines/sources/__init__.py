"""Data sources. Each turns a storage format into the example dict of `data_pipelines.records`.

`make_source(spec)` builds one from a config mapping whose `kind` names the format; see
`data_pipelines.sources.base.SOURCE_KINDS` for the registered kinds.
"""

from data_pipelines.sources.base import (
    SOURCE_KINDS,
    RandomAccessSource,
    StreamingSource,
    make_source,
    register_source,
)

__all__ = [
    "SOURCE_KINDS",
    "RandomAccessSource",
    "StreamingSource",
    "make_source",
    "register_source",
]
