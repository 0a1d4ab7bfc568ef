"""Backbones and fine-tuning methods: which model a name means and how it is built
(:mod:`.backbones`: resolution, families, heads, tokenizers), and which of its parameters train
(:mod:`.methods`: head, LoRA through peft or loralab's own layer, full, prelayer, none)."""
