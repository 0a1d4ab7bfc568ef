"""The peft adapter folder, as loralab reads and writes it: its file names and the prefix of every
key in its weights file. No imports, so that the run directory, exports and the CLI can name these
files without loading peft or torch."""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's prefix of every key in an adapter file
