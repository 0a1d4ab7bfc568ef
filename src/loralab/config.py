"""Typed, self-validating run configuration.

A run is described by one :class:`RunConfig` made of four groups (data, model, method, train).
Every field name is unique across groups, so a run can also be described by a *flat* mapping
(``{"method": "lora", "rank": 16, "train_size": 1000}``): that is what the CLI flags, the study
grids and ``config.json`` use. All defaults live here, with a comment each; nothing else in the
package invents a default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_origin, get_type_hints

from loralab.errors import ConfigError

METHODS = ("head", "lora", "full", "prelayer", "bitfit", "ia3", "vera", "adalora", "none")
#: ``--init`` values: peft's ``init_lora_weights`` initialisations that need no data (``pissa_niter_N``
#: too: PiSSA by a fast randomised SVD of N subspace iterations). Unset: peft's default (A Kaiming-uniform,
#: B zero). PiSSA and OLoRA move the top of each weight into the adapter; their run directories hold
#: the plain LoRA delta for the original weights (loralab.models.methods.lora.save_adapter).
LORA_INITS = ("gaussian", "pissa", "olora", "orthogonal", "mica")
IMPLS = ("peft", "scratch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Default learning rate per method, used when ``lr`` is not given. head, lora, full and prelayer were
#: chosen on MiniLM-L6 / SST-2 (docs/training.md, "Default hyper-parameters"): frozen-backbone methods
#: tolerate (and need) a large step; full fine-tuning of every weight needs a small one.
DEFAULT_LR: dict[str, float] = {
    "head": 1e-2,
    "lora": 5e-4,
    "full": 5e-5,
    "prelayer": 3e-4,
    # not tuned on SST-2 here: the published recipes (sources in docs/training.md, "Methods")
    "bitfit": 1e-3,  # BitFit (Ben Zaken et al., 2022): the top of the 1e-4..1e-3 it searched on GLUE
    "ia3": 3e-3,  # (IA)^3 (Liu et al., 2022, T-Few): 3e-3
    "vera": 1e-2,  # VeRA (Kopiczko et al., 2024), RoBERTa on GLUE: 4e-3..1e-2 for the vectors and the head
    "adalora": 8e-4,  # AdaLoRA (Zhang et al., 2023), DeBERTaV3-base on SST-2: 8e-4
    "none": 0.0,
}

#: Default ``target_modules`` preset for LoRA (see :data:`TARGET_PRESETS`): on MiniLM-L6 / SST-2, LoRA on
#: every linear layer beats LoRA on query/value only (the measurements: docs/results.md).
DEFAULT_TARGETS = "all-linear"
#: Target-module presets, resolved per architecture family by ``loralab.models.methods``.
TARGET_PRESETS = ("all-linear", "qv")

DATA_DIR_ENV = "LORALAB_DATA_DIR"


def _opt(help: str, default: Any = None, **kw: Any) -> Any:
    """A dataclass field with a help text (shown by the CLI)."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DataConfig:
    """Where the examples come from and how they are cut."""

    data_dir: str | None = _opt(
        "directory with train/validation[/test] files (.tsv, .csv or .jsonl); "
        f"default: ${DATA_DIR_ENV}, else the Hugging Face hub (glue/sst2)"
    )
    train_file: str | None = _opt("training file (.tsv/.csv/.jsonl); overrides --data-dir")
    validation_file: str | None = _opt("validation file; overrides --data-dir")
    test_file: str | None = _opt("test file (optional); overrides --data-dir")
    text_column: str = _opt("column (or JSON key) holding the text", "sentence")
    label_column: str = _opt("column (or JSON key) holding the label", "label")
    labels: list[str] | None = _opt(
        "the label set, in id order (e.g. neg,pos); default: SST-2's {0,1} for SST-2 data, "
        "else the labels seen in the training file"
    )
    train_size: int | None = _opt("stratified, seeded subsample of N training examples")
    max_length: int = _opt("truncate texts to this many tokens", 128)

    def validate(self) -> None:
        if self.train_size is not None and self.train_size < 2:
            raise ConfigError(f"--train-size must be at least 2, got {self.train_size}")
        if self.max_length < 2:
            raise ConfigError(f"--max-length must be at least 2, got {self.max_length}")
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ConfigError("--labels needs at least two labels")
            if len(set(self.labels)) != len(self.labels):
                raise ConfigError(f"--labels has a duplicate: {self.labels}")
        if self.text_column == self.label_column:
            raise ConfigError("--text-column and --label-column must differ")

    def resolved_data_dir(self) -> str | None:
        return self.data_dir or os.environ.get(DATA_DIR_ENV) or None


@dataclass
class ModelConfig:
    """Which backbone to build."""

    model: str = _opt(
        "backbone: alias (minilm-l6, distilbert, bert-base, gpt2, roberta-base), "
        "a local model folder or a Hugging Face hub id",
        "minilm-l6",
    )

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("--model must not be empty")


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


@dataclass
class TrainConfig:
    """How to optimise, evaluate and where to write."""

    epochs: int = _opt("training epochs", 3)
    batch_size: int = _opt(
        "global training batch size: summed over all processes and accumulation steps, so the same value "
        "means the same optimisation on 1 or N processes",
        32,
    )
    grad_accum: int = _opt(
        "gradient accumulation: each process builds its share of a batch from K micro-batches "
        "(batch size must be divisible by processes x K)",
        1,
    )
    lr: float | None = _opt(
        "peak learning rate; default per method: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items() if k != "none")
    )
    patience: int | None = _opt(
        "early stopping: stop after N epochs without a better validation accuracy (the best epoch is restored)"
    )
    weight_decay: float = _opt("AdamW weight decay (not applied to biases and LayerNorm)", 0.01)
    warmup_ratio: float = _opt("fraction of steps with linear warm-up", 0.06)
    max_grad_norm: float = _opt("clip the gradient norm to this value (0: no clipping)", 1.0)
    seed: int = _opt("random seed (subsample, init, batches, dropout)", 42)
    eval_batch_size: int = _opt("batch size for evaluation and prediction", 64)
    log_every: int = _opt("log the training loss every N optimizer steps", 50)
    group_by_length: bool = _opt("batch examples of similar length together (seeded)", True)
    device: str = _opt("auto, cpu or cuda", "auto", choices=("auto", "cpu", "cuda"))
    precision: str = _opt(
        "training precision: auto (bf16 autocast on GPUs that support it, fp16 with loss scaling on other "
        "GPUs, fp32 on CPU; or what `accelerate launch --mixed_precision` asked for), fp32, bf16 or fp16",
        "auto",
        choices=PRECISIONS,
    )
    cache_features: bool = _opt("head: run the frozen backbone once and train the head on cached features", True)
    compile: bool = _opt("torch.compile the model for training (GPU; first steps are slow)", False)
    checkpoint_every: str = _opt(
        "save a resumable checkpoint beside the run directory: epoch (after each epoch), N (every N optimizer "
        "steps and after each epoch) or none",
        "epoch",
    )
    resume: bool = _opt(
        "continue a killed run from its last checkpoint (needs --output-dir; none there: a warning and a fresh "
        "start); the same options, but --grad-accum and the number of processes may change",
        False,
    )
    keep_checkpoints: bool = _opt("keep the final training state in the run directory (checkpoint/)", False)
    report_to: list[str] | None = _opt(
        "experiment trackers, comma-separated: tensorboard (writes <run>/tensorboard/), mlflow (MLFLOW_TRACKING_URI, "
        "else ./mlflow.db and ./mlruns), wandb (<run>/wandb/; WANDB_MODE=offline keeps it there); "
        "pip install 'loralab[track]'"
    )
    output_dir: str | None = _opt("run directory; default runs/<model>-<method>-<time>")
    overwrite: bool = _opt("replace an existing run directory", False)
    progress: bool = _opt("show a progress bar", True)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size", "log_every"):
            value = getattr(self, name)
            if value < 1 and not (name == "epochs" and value == 0):
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be at least 1, got {self.patience}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"--batch-size {self.batch_size} is not divisible by --grad-accum {self.grad_accum}")
        self.checkpoint_steps()  # validates --checkpoint-every
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range, which accelerate's set_seed passes on
            raise ConfigError(f"--seed must be in [0, 2**32), got {self.seed}")
        if self.resume and not self.output_dir:
            raise ConfigError("--resume needs --output-dir (the run directory to continue)")

    def checkpoint_steps(self) -> int | None:
        """Steps between checkpoints from ``--checkpoint-every`` (None: only at epoch ends, or none)."""
        value = str(self.checkpoint_every).strip().lower()
        if value in ("epoch", "none"):
            return None
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(
                f"--checkpoint-every must be epoch, none or a number of steps >= 1, got {self.checkpoint_every!r}"
            )
        return int(value)


GROUPS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
}


@dataclass
class RunConfig:
    """One training run: the four groups together."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.normalize()
        self.validate()

    def normalize(self) -> None:
        """The one rewrite of a given option: ``none`` evaluates the untrained model, so its
        config says 0 epochs whatever ``--epochs`` says (recorded as run, and hashed as such)."""
        if self.method.method == "none":
            self.train.epochs = 0

    def validate(self) -> None:
        """Check every option and their combinations; changes nothing."""
        for group in GROUPS:
            getattr(self, group).validate()
        if self.method.method != "none" and self.train.epochs == 0:
            raise ConfigError(
                f"--epochs 0 trains nothing with --method {self.method.method}; "
                "to evaluate the untrained model use --method none"
            )

    @property
    def lr(self) -> float:
        """The learning rate in force: ``train.lr`` or the method's default."""
        return self.train.lr if self.train.lr is not None else DEFAULT_LR[self.method.method]

    # ---- flat view -------------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group in GROUPS:
            out.update(dataclasses.asdict(getattr(self, group)))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {group: dataclasses.asdict(getattr(self, group)) for group in GROUPS}

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> RunConfig:
        return cls().override(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict` (nested) — also accepts a flat mapping."""
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if key in GROUPS and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        return cls.from_flat(flat)

    def override(self, values: dict[str, Any]) -> RunConfig:
        """A new config with ``values`` (flat field names) replaced; unknown keys are errors."""
        groups = {g: dataclasses.asdict(getattr(self, g)) for g in GROUPS}
        owner = field_owner()
        for key, value in values.items():
            norm = key.replace("-", "_")
            if norm not in owner:
                raise ConfigError(f"unknown option {key!r}")
            groups[owner[norm]][norm] = coerce(GROUPS[owner[norm]], norm, value)
        return RunConfig(**{g: GROUPS[g](**groups[g]) for g in GROUPS})


#: Options that say where and how a run is written, not what it computes: a resumed run may
#: change them (checkpoint.py), and a study's run id leaves them out (study/identity.py).
OUTPUT_OPTIONS = ("output_dir", "overwrite", "progress", "resume", "checkpoint_every", "keep_checkpoints")
#: Options a replayed ``config.json`` does not carry over: where the original run was written.
NOT_REPLAYED = ("output_dir", "overwrite", "resume")


def read_config_file(path: str) -> RunConfig:
    """The run config of ``--config FILE``: a YAML file with the keys of a study's ``base``
    (flat, or grouped as ``data:``/``model:``/``method:``/``train:``), or a run's ``config.json``,
    which replays that run (everything but where it was written). Errors name the file and key."""
    import json

    import yaml

    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror})") from None
    try:
        values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(
            f"--config {path}: not valid {'JSON' if path.endswith('.json') else 'YAML'} ({str(e).splitlines()[0]})"
        ) from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of run options, got {type(values).__name__}")
    replay = isinstance(values.get("config"), dict) and "schema_version" in values
    if replay:  # a run directory's config.json
        values = {k: v for k, v in values["config"].items()}
    flat: dict[str, Any] = {}
    owner = field_owner()
    for key, value in values.items():
        if key in GROUPS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    for key in flat:
        if key.replace("-", "_") not in owner:
            raise ConfigError(f"--config {path}: unknown option {key!r}")
    if replay:
        flat = {k: v for k, v in flat.items() if k not in NOT_REPLAYED}
    try:
        return RunConfig().override(flat)
    except ConfigError as e:
        raise ConfigError(f"--config {path}: {e}") from None


def field_owner() -> dict[str, str]:
    """Map each flat field name to its group."""
    return {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}


def field_type(cls: type, name: str) -> Any:
    return get_type_hints(cls)[name]


def coerce(cls: type, name: str, value: Any) -> Any:
    """Convert ``value`` (from YAML, JSON or a CLI string) to the field's declared type."""
    flag = "--" + name.replace("_", "-")
    hint = field_type(cls, name)
    args = [a for a in get_args(hint) if a is not type(None)]
    if value is None:
        if type(None) in get_args(hint):
            return None
        raise ConfigError(f"{flag} must not be empty")
    base = args[0] if args else hint
    try:
        if get_origin(base) is list:
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
            elif isinstance(value, (list, tuple)):
                items = [str(v) for v in value]
            else:
                raise ValueError
            return items
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag}: cannot use {value!r} (expected {_type_name(hint)})") from None
    return value


def _type_name(hint: Any) -> str:
    args = [a for a in get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    if get_origin(base) is list:
        return "a comma-separated list"
    return getattr(base, "__name__", str(base))
