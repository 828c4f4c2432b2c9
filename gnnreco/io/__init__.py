"""Input and output of reconstruction workflows: read events, write results, check checkpoints.

* :mod:`gnnreco.io.schema` — per-task input schemas (logical field → branch name) and the assembly of
  a raw event from plain arrays;
* :mod:`gnnreco.io.readers` — streamed readers for ROOT TTrees (uproot), parquet (awkward/pyarrow),
  TrackML CSV directories and event stores;
* :mod:`gnnreco.io.results` — the output columns of every task (track candidates as hit-index lists
  with scores, clusters with energy, PF candidates, decay trees as LCA pairs and parent links);
* :mod:`gnnreco.io.output` — the chunked, atomic, resumable ROOT/parquet writer;
* :mod:`gnnreco.io.checkpoint` — refusing a checkpoint of another task, network or version.

``gnnreco infer`` and :class:`gnnreco.Reconstructor` are built on these (docs/inference.md).
"""

from gnnreco.io.checkpoint import CheckpointMismatchError, check_checkpoint
from gnnreco.io.output import ChunkedOutput, ResumeMismatchError, read_results, write_results
from gnnreco.io.readers import InputEvent, open_input, write_input_file
from gnnreco.io.results import dense_lca, result_columns, tracks_from_columns
from gnnreco.io.schema import InputSchema, MissingBranchError, assemble, default_schema, fields_of_raw

__all__ = [
    "CheckpointMismatchError",
    "check_checkpoint",
    "ChunkedOutput",
    "ResumeMismatchError",
    "read_results",
    "write_results",
    "InputEvent",
    "open_input",
    "write_input_file",
    "result_columns",
    "tracks_from_columns",
    "dense_lca",
    "InputSchema",
    "MissingBranchError",
    "assemble",
    "default_schema",
    "fields_of_raw",
]
