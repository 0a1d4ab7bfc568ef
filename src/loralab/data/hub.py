"""SST-2 from the Hugging Face hub, the data of online users who give no local data.

The same path as ``--dataset`` (:mod:`.datasets_source`): GLUE's SST-2 for train and validation,
and for test a public copy that carries the labels GLUE's test split leaves out. Any failure (no
``datasets``, hub unreachable and nothing cached) becomes one line that says how to give data.
"""

from __future__ import annotations

from loralab.config import DataConfig
from loralab.data.datasets_source import read_dataset
from loralab.data.labels import SST2_LABEL_NAMES, SST2_LABELS
from loralab.data.splits import DataBundle, Split
from loralab.errors import DataError

#: Hub sources used only when no data is given (online users).
HUB_SST2 = ("nyu-mll/glue", "sst2")
#: GLUE's SST-2 test split is unlabeled; this public copy carries the 1,821 labels.
HUB_SST2_TEST = "SetFit/sst2"


def load_hub_sst2() -> DataBundle:
    """SST-2 from the Hugging Face hub (or the ``datasets`` cache), for users who give no data."""
    try:
        glue = read_dataset(DataConfig(dataset=HUB_SST2[0], dataset_config=HUB_SST2[1]))
        test = read_dataset(DataConfig(dataset=HUB_SST2_TEST, text_column="text"))
    except DataError as e:
        raise DataError(
            "--data-dir",
            None,
            f"no data given, and the hub fallback failed ({e}); pass --data-dir or set LORALAB_DATA_DIR",
        ) from None
    index = {lab: i for i, lab in enumerate(SST2_LABELS)}

    def split(name: str, named, source: str) -> Split:
        rows = named.records[source]
        for r in rows:
            if r.label not in index:
                raise DataError(
                    named.origins[source], None, f"row {r.line}: label {r.label!r} is not one of {SST2_LABELS}"
                )
        return Split(name, [r.text for r in rows], [index[r.label] for r in rows], f"hub:{named.origins[source]}", None)

    return DataBundle(
        split("train", glue, "train"),
        split("validation", glue, "validation"),
        split("test", test, "test"),
        list(SST2_LABEL_NAMES),
        list(SST2_LABELS),
        "hub",
    )
