"""The method group of a run's options: which parameters train, and the adapter methods' settings."""

from __future__ import annotations

from dataclasses import dataclass

from loralab.config.choices import DEFAULT_TARGETS, IMPLS, LORA_INITS, METHODS, TARGET_PRESETS
from loralab.config.choices import opt as _opt
from loralab.errors import ConfigError


@dataclass
class MethodConfig:
    """Which parameters train, and the settings of the adapter methods.

    Options added after the first release default to None (unset), so that the run id of every
    earlier configuration stays the same (``experiments.identity``)."""

    method: str = _opt(f"fine-tuning method: {', '.join(METHODS)} (docs/training.md, Methods)", "lora", choices=METHODS)
    rank: int = _opt(
        "rank r: LoRA's; vera: the rank of the shared random projections; adalora: every adapted layer's "
        "rank at the start (its budget then shrinks to --target-rank)",
        16,
    )
    alpha: float = _opt("LoRA scaling alpha (update is scaled by alpha/r)", 32.0)
    dropout: float = _opt("dropout on the LoRA input", 0.1)
    target_modules: list[str] | None = _opt(
        "modules that get LoRA adapters: module names (e.g. query,value), or a preset named per "
        "family: all-linear (every linear layer of the backbone below the head: attention and "
        "feed-forward) or qv (the query and value projections: BERT/RoBERTa query,value, DistilBERT "
        "q_lin,v_lin, GPT-2 c_attn)",
        [DEFAULT_TARGETS],
    )
    layers: str | None = _opt("transformer layers to adapt: all (default), a range 0-5, a list 0,2,4, bottomN or topN")
    impl: str = _opt("LoRA implementation: peft or scratch", "peft", choices=IMPLS)
    dora: bool | None = _opt(
        "lora: DoRA (weight-decomposed LoRA: a trainable magnitude per output unit, LoRA on the direction; "
        "peft's use_dora); needs --impl peft"
    )
    rslora: bool | None = _opt("lora: rank-stabilised LoRA, the update scaled by alpha/sqrt(r) instead of alpha/r")
    init: str | None = _opt(
        "lora: the adapters' initialisation (peft's init_lora_weights): "
        + ", ".join(LORA_INITS)
        + " or pissa_niter_N; default: A Kaiming-uniform, B zero. pissa and olora start from the top of "
        "each weight and save the plain LoRA delta for the original model; needs --impl peft"
    )
    lora_plus_ratio: float | None = _opt(
        "lora: LoRA+, the B matrices at R times the learning rate (the A matrices, DoRA's magnitudes and "
        "the head keep --lr); the LoRA+ paper suggests 16"
    )
    target_rank: int | None = _opt(
        "adalora: the average rank per adapted layer that the rank budget shrinks to; default: 2/3 of "
        "--rank, rounded down (the AdaLoRA paper starts at 1.5 times its final budget)"
    )

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.impl not in IMPLS:
            raise ConfigError(f"--impl must be one of {', '.join(IMPLS)}, got {self.impl!r}")
        if self.rank < 1:
            raise ConfigError(f"--rank must be at least 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"--alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None:
            if not self.target_modules:
                raise ConfigError("--target-modules must name at least one module")
            presets = [t for t in self.target_modules if t in TARGET_PRESETS]
            if presets and len(self.target_modules) > 1:
                raise ConfigError(f"--target-modules: the preset {presets[0]} cannot be combined with other names")
        self._validate_variants()

    def _validate_variants(self) -> None:
        """The options of one method only, and their combinations."""
        owners = {"dora": "lora", "rslora": "lora", "init": "lora", "lora_plus_ratio": "lora", "target_rank": "adalora"}
        for name, owner in owners.items():
            value = getattr(self, name)
            if value not in (None, False) and self.method != owner:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} is an option of --method {owner}, not of --method {self.method}")
        if self.init is not None and not (self.init in LORA_INITS or _is_pissa_niter(self.init)):
            raise ConfigError(f"--init must be one of {', '.join(LORA_INITS)} or pissa_niter_N, got {self.init!r}")
        if self.impl == "scratch" and (self.dora or self.init is not None):
            flag = "--dora" if self.dora else f"--init {self.init}"
            raise ConfigError(
                f"{flag} needs --impl peft (loralab's scratch LoRA layer has only the plain initialisation)"
            )
        if self.dora and self.init is not None and self.init not in ("gaussian", "orthogonal"):
            raise ConfigError(
                f"--dora with --init {self.init}: only gaussian or orthogonal (DoRA's magnitudes do not carry "
                "over to the plain LoRA delta a pissa/olora run is saved as, and mica is a variant of its own)"
            )
        if self.init == "orthogonal" and self.rank % 2:
            raise ConfigError(f"--init orthogonal needs an even --rank, got {self.rank}")
        if self.lora_plus_ratio is not None and self.lora_plus_ratio <= 0:
            raise ConfigError(f"--lora-plus-ratio must be positive, got {self.lora_plus_ratio}")
        if self.method == "adalora":
            if self.rank < 2:
                raise ConfigError(f"--method adalora needs --rank of at least 2 (it prunes it down), got {self.rank}")
            target = self.adalora_target_rank()
            if not 1 <= target < self.rank:
                raise ConfigError(
                    f"--target-rank must be at least 1 and below --rank {self.rank} (AdaLoRA starts at --rank and "
                    f"prunes down to it), got {target}"
                )

    def adalora_target_rank(self) -> int:
        """AdaLoRA's final average rank: ``--target-rank``, else 2/3 of ``--rank`` (at least 1)."""
        return self.target_rank if self.target_rank is not None else max(1, 2 * self.rank // 3)


def _is_pissa_niter(value: str) -> bool:
    prefix, _, iterations = value.partition("_niter_")
    return prefix == "pissa" and iterations.isdigit()
