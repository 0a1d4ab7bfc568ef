"""The train group of a run's options: how to optimise, evaluate and where to write."""

from __future__ import annotations

from dataclasses import dataclass

from loralab.config.choices import DEFAULT_LR, PRECISIONS
from loralab.config.choices import opt as _opt
from loralab.config.glue import METRIC_DIRECTIONS
from loralab.errors import ConfigError


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
        "early stopping: stop after N epochs without a better validation --metric (the best epoch is restored)"
    )
    metric: str | None = _opt(
        "the validation metric that picks the best epoch and drives --patience (also a study's best cell and "
        "a search's default objective): accuracy, f1, f1_macro, precision, recall, mcc, loss (classification); "
        "pearson, spearman, mse, loss (regression); default: the --glue preset's, else accuracy "
        "(classification) or pearson (regression)",
        choices=tuple(METRIC_DIRECTIONS),
    )
    class_weights: str | None = _opt(
        "classification: weight each class in the cross-entropy: balanced (n / (classes x count) from the "
        "training labels), none, or one weight per label in id order (w1,w2,...)"
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
        "GPUs, bf16 on CPUs with native bf16 (AVX-512 BF16 or AMX), fp32 on other CPUs; or what "
        "`accelerate launch --mixed_precision` asked for), fp32, bf16 or fp16",
        "auto",
        choices=PRECISIONS,
    )
    cache_features: bool = _opt("head: run the frozen backbone once and train the head on cached features", True)
    compile: bool = _opt("torch.compile the model for training (GPU; first steps are slow)", False)
    gradient_checkpointing: bool | None = _opt(
        "recompute each block's activations in the backward pass instead of keeping them: less memory for "
        "long inputs and big models, about a third more compute"
    )
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
        self.parsed_class_weights()  # validates --class-weights
        if self.metric is not None and self.metric not in METRIC_DIRECTIONS:
            raise ConfigError(f"--metric must be one of {', '.join(METRIC_DIRECTIONS)}, got {self.metric!r}")
        if self.resume and not self.output_dir:
            raise ConfigError("--resume needs --output-dir (the run directory to continue)")

    def parsed_class_weights(self) -> str | list[float] | None:
        """``--class-weights`` read: None (unset or ``none``), ``"balanced"`` or the list of weights."""
        value = self.class_weights
        if value is None or str(value).strip().lower() == "none":
            return None
        text = str(value).strip().lower()
        if text == "balanced":
            return "balanced"
        try:
            weights = [float(w) for w in text.split(",")]
        except ValueError:
            raise ConfigError(f"--class-weights must be balanced, none or w1,w2,..., got {value!r}") from None
        if len(weights) < 2 or any(not w >= 0 for w in weights) or not any(w > 0 for w in weights):
            raise ConfigError(f"--class-weights needs one non-negative weight per label (some > 0), got {value!r}")
        return weights

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
