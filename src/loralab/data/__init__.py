"""Everything between a data file and a padded batch: reading and validating datasets (FILE:LINE
errors), the label set, the hub fallback, subsampling, tokenisation with its on-disk cache, and
padding (which examples each process trains on at each step is :mod:`loralab.training.sampler`).

One module per concern:

- :mod:`.readers` — one .tsv/.csv/.jsonl file into validated rows (a second text for pair tasks, no
  labels for a test file without them); ``predict --file`` text lines; file hashes;
- :mod:`.labels` — which label set a run uses (``--labels``, SST-2's ``{0, 1}``, the training file's),
  labels that look like scores refused, regression targets;
- :mod:`.splits` — :class:`Split` and :class:`DataBundle` in memory; the ``--train-size`` subsample and
  the ``--validation-split`` hold-out;
- :mod:`.load` — :func:`load_data`: from a ``DataConfig`` to a ``DataBundle`` (:func:`split_paths` finds the files);
- :mod:`.datasets_source` — ``--dataset``: a hub id, a ``save_to_disk`` folder or a folder of data files, as rows;
- :mod:`.hub` — SST-2 from the Hugging Face hub (or its cache) when no data is given;
- :mod:`.tokens` — tokenisation, the token cache, :class:`EncodedDataset`;
- :mod:`.batching` — dynamic padding, the training collator, length-sorted inference batches;

The names below are the package's public surface; importers use ``from loralab.data import ...``.
"""

from __future__ import annotations

from loralab.data.batching import PadCollator, label_dtype, length_sorted_batches, model_inputs, pad_batch, segment_ids
from loralab.data.hub import HUB_SST2, HUB_SST2_TEST
from loralab.data.labels import SST2_LABEL_NAMES, SST2_LABELS
from loralab.data.load import SPLITS, load_data, split_paths
from loralab.data.readers import FORMATS, Record, read_examples, read_records, read_table, read_text_lines, sha256_file
from loralab.data.splits import DataBundle, Split, hold_out, stratified_subsample
from loralab.data.tokens import (
    CACHE_ENV,
    EncodedDataset,
    cache_dir,
    encode,
    encode_cached,
    segment_separator,
    tokenizer_fingerprint,
)

__all__ = [
    "CACHE_ENV",
    "FORMATS",
    "HUB_SST2",
    "HUB_SST2_TEST",
    "SPLITS",
    "SST2_LABELS",
    "SST2_LABEL_NAMES",
    "DataBundle",
    "EncodedDataset",
    "PadCollator",
    "Record",
    "Split",
    "cache_dir",
    "encode",
    "encode_cached",
    "hold_out",
    "label_dtype",
    "length_sorted_batches",
    "load_data",
    "model_inputs",
    "pad_batch",
    "read_examples",
    "read_records",
    "read_table",
    "read_text_lines",
    "segment_ids",
    "segment_separator",
    "sha256_file",
    "split_paths",
    "stratified_subsample",
    "tokenizer_fingerprint",
]
