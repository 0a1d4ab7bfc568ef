"""The peft adapter folder, as loralab reads and writes it: its file names, the prefix of every
key in its weights file, and which methods are saved as one. No imports, so that the run directory, exports and the CLI can name these
files without loading peft or torch."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's prefix of every key in an adapter file
#: Methods whose run directory holds a peft adapter folder (``adapter/``): the backbone's weights are
#: the base model's, and the trained update merges into them (``merge_and_unload``).
ADAPTER_METHODS = ("lora", "vera", "ia3", "adalora")
