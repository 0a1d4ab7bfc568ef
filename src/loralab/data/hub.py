"""SST-2 from the Hugging Face hub (``datasets``), the data of online users who give no local data.

Online-only and optional: ``datasets`` is imported only here, and any failure (not installed, hub
unreachable, offline mode) becomes one line that says how to give local data instead.
"""

from __future__ import annotations

from loralab.data.labels import SST2_LABEL_NAMES, SST2_LABELS
from loralab.data.splits import DataBundle, Split
from loralab.errors import DataError

#: Hub sources used only when no local data is given (online users).
HUB_SST2 = ("nyu-mll/glue", "sst2")
#: GLUE's SST-2 test split is unlabeled; this public copy carries the 1,821 labels.
HUB_SST2_TEST = "SetFit/sst2"


def load_hub_sst2() -> DataBundle:
    """SST-2 from the Hugging Face hub, for users who are online and give no local data."""
    try:
        from datasets import load_dataset  # optional, heavy, online-only path
    except ImportError:
        raise DataError(
            "--data-dir",
            None,
            "no data given: pass --data-dir or set LORALAB_DATA_DIR (the hub path needs `pip install datasets`)",
        ) from None
    try:
        glue = load_dataset(*HUB_SST2)
        test = load_dataset(HUB_SST2_TEST, split="test")
    except Exception as e:  # any hub failure becomes one clear line
        raise DataError(
            "--data-dir",
            None,
            f"no data given and the Hugging Face hub is unreachable ({type(e).__name__}); "
            "pass --data-dir or set LORALAB_DATA_DIR",
        ) from None

    def mk(name: str, texts: list[str], labels: list[int], src: str) -> Split:
        return Split(name, list(texts), [int(v) for v in labels], src, None)

    return DataBundle(
        mk("train", glue["train"]["sentence"], glue["train"]["label"], "hub:glue/sst2/train"),
        mk("validation", glue["validation"]["sentence"], glue["validation"]["label"], "hub:glue/sst2/validation"),
        mk("test", test["text"], test["label"], f"hub:{HUB_SST2_TEST}/test"),
        list(SST2_LABEL_NAMES),
        list(SST2_LABELS),
        "hub",
    )
