"""What wraps and runs one optimizer step: :func:`step_context` (the cheaper CPU dropout mask,
lean autocast, the TF32 scope) and :class:`TrainStep` (loss, backward, clipping, update).

``fit`` runs every step of an epoch through a :class:`TrainStep` inside :func:`step_context`; the
benchmarks call the same two, so that they time the trainer's own step (their flags turn parts of
the context off, to compare). Everything the context changes is undone when it ends: validation,
prediction and saving see the model as built (fp32 weights, stock dropout modules, fp32 matmuls).
The loss of a step (cross-entropy, weighted per class with ``--class-weights``; squared error for
regression) is :func:`micro_loss`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from loralab.errors import ConfigError
from loralab.runtime import autocast

_WORDS = 1 << 16


def keep_mask(shape: torch.Size, p: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A boolean mask that keeps each element with probability ``1 - p'`` (``p'`` = ``p`` rounded to
    a multiple of 1/65,536), and ``p'``."""
    n = shape.numel()
    drop_words = round(p * _WORDS)
    # the full int64 range: random_() without bounds never sets the sign bit, which would bias
    # every fourth word (modulo 2**64 - 1 leaves a bias of 2**-64)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1, generator=generator)
    words = words.view(torch.int16)[:n].view(shape)
    return words >= (drop_words - _WORDS // 2), drop_words / _WORDS


class CPUDropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper mask on CPU tensors; anywhere else, the stock kernel.

    Why: on CPU, torch's dropout mask (``aten::bernoulli_``: one Mersenne-Twister draw per
    element) is the largest cost of a LoRA step after the model's own matmuls (bench/RESULTS.md,
    ``bench/profile_step.py``). A mask needs far fewer random bits: :func:`keep_mask` fills a
    quarter as many 64-bit integers with ``Tensor.random_``, reads them as 16-bit words, one per
    element, and keeps an element when its word is at or above a threshold. Same distribution up
    to the quantisation of ``p`` to a multiple of 1/65,536 (0.1 becomes 0.100006; kept elements are
    scaled by the exact ``1 / (1 - p')``, so the expectation is unchanged), same generator (seeded
    by ``torch.manual_seed``, deterministic).

    Only ``nn.Dropout`` *modules* are swapped in (the model's hidden-state dropouts and peft's
    ``lora_dropout``, by :func:`swap_cpu_dropout`); the attention-probability dropout inside the
    attention function and every GPU path keep torch's kernels (CUDA's is a fused Philox kernel).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or self.p >= 1.0 or x.device.type != "cpu":
            return super().forward(x)
        keep, p = keep_mask(x.shape, self.p)
        if p == 0.0:
            return x
        # the scale is in x's dtype, as in torch's own CPU dropout: for bf16 input 1/(1-p) is rounded
        # first (1/0.9 -> 1.1094). Scaling by a Python number and then masking would round once,
        # but costs one more elementwise pass forward and backward (bench/RESULTS.md).
        scale = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
        return x.mul_(scale) if self.inplace else x * scale


@contextlib.contextmanager
def swap_cpu_dropout(model: nn.Module) -> Iterator[int]:
    """Within the block, every ``nn.Dropout`` module of ``model`` is a :class:`CPUDropout` with the
    same ``p``; afterwards the original modules are back (with the training flag the block left).
    Yields the number of modules swapped. The state dict is unchanged (dropout has no state)."""
    swapped: list[tuple[nn.Module, str, nn.Dropout, CPUDropout]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                fast = CPUDropout(child.p, child.inplace)
                fast.train(child.training)
                setattr(parent, name, fast)
                swapped.append((parent, name, child, fast))
    try:
        yield len(swapped)
    finally:
        for parent, name, original, fast in swapped:
            original.train(fast.training)
            setattr(parent, name, original)


def lean_autocast_dtype(dtype: torch.dtype | None, distributed_type: str = "NO") -> torch.dtype | None:
    """The dtype for :func:`lean_autocast` under accelerate's ``distributed_type``: it swaps frozen
    parameters' storage, which is fine on one device and under DDP (frozen parameters are never
    synchronised), not under engines that shard or own the parameters (None: plain autocast)."""
    return None if distributed_type in ("FSDP", "DEEPSPEED", "MEGATRON_LM", "XLA") else dtype


@contextlib.contextmanager
def lean_autocast(model: nn.Module, dtype: torch.dtype | None) -> Iterator[int]:
    """Within the block, training under ``autocast(dtype)`` skips casts that change nothing.

    Written by hand because neither torch nor peft does it, and it is where bf16 training of a
    LoRA model spent its time (bench/RESULTS.md: on CPU, casts ate all that bf16 gained on the
    matmuls of r16 on every linear layer):

    - autocast caches the low-precision copy of a weight only for leaf tensors that require
      grad, so every *frozen* ``nn.Linear``/``Conv1D`` weight (all of the backbone under LoRA) is
      cast again at every call. Here they hold the ``dtype`` copy for the block, which is exactly
      what autocast would compute (same rounding; those weights are only read by autocast's
      low-precision ops), and get their fp32 tensors back afterwards (evaluation, saving).
    - peft casts each LoRA layer's input to the adapter's fp32 dtype, and autocast casts it back
      for ``lora_A``; peft's own switch turns that off (autocast does the casting anyway).

    Without dropout a step is bit-identical to plain autocast (tested). With dropout, a LoRA input
    that is already bf16 is dropped out in bf16, like every other dropout of the model under
    autocast, instead of in fp32 after peft's cast: the scale 1/(1-p) is rounded to bf16.

    ``dtype`` None (fp32 training): does nothing. Yields the number of tensors cast.
    """
    if dtype is None:
        yield 0
        return
    from transformers.pytorch_utils import Conv1D

    # a weight tied to an embedding (a language-model head) is read outside autocast too: left alone
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, Conv1D)):
            for p in (module.weight, module.bias):
                # (a weight shared by two layers is cast once: the second time its dtype is dtype)
                if (
                    p is not None
                    and not p.requires_grad
                    and p.is_floating_point()
                    and p.dtype != dtype
                    and id(p) not in embedding
                ):
                    saved.append((p, p.data))
                    p.data = p.data.to(dtype)
    # peft's input casting off, for the tuner layers that have the switch. By hand, not with
    # peft.helpers.disable_input_dtype_casting: that raises AttributeError on tuner layers without
    # it (VeRA's, IA3's), so bf16 training of those methods failed before its first step.
    casting = [m for m in model.modules() if isinstance(getattr(m, "cast_input_dtype_enabled", None), bool)]
    switched = [(m, m.cast_input_dtype_enabled) for m in casting]
    try:
        for m in casting:
            m.cast_input_dtype_enabled = False
        yield len(saved)
    finally:
        for m, value in switched:
            m.cast_input_dtype_enabled = value
        for p, data in saved:
            p.data = data


@contextlib.contextmanager
def fast_matmuls(device: torch.device) -> Iterator[None]:
    """TF32 matmuls on CUDA (Ampere and newer) within the block only: training steps are faster,
    while evaluation, prediction files, ``predict``, ``serve`` and export checks keep full fp32
    and give the same labels on a GPU as on CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def step_context(
    model: nn.Module,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    cpu_dropout: bool = True,
    lean: bool = True,
) -> Iterator[None]:
    """What the optimizer steps of an epoch run in (``cpu_dropout`` and ``lean`` off: to compare):

    - on CPU, ``nn.Dropout`` modules use the cheaper mask of :class:`CPUDropout`;
    - under autocast, :func:`lean_autocast` (frozen weights held in low precision, no peft input
      casts), with ``autocast_dtype`` from :func:`lean_autocast_dtype`;
    - on CUDA, TF32 matmuls (:func:`fast_matmuls`).
    """
    with contextlib.ExitStack() as stack:
        if cpu_dropout and device.type == "cpu":
            stack.enter_context(swap_cpu_dropout(model))
        if lean:
            stack.enter_context(lean_autocast(model, autocast_dtype))
        stack.enter_context(fast_matmuls(device))
        yield


def set_frozen_modules_eval(model: nn.Module, method: str) -> None:
    """For ``head``, the frozen backbone runs in eval mode (no dropout), as for any frozen
    feature extractor; the other methods train with the model's own dropout."""
    if method == "head":
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        getattr(base, base.base_model_prefix).eval()


def example_losses(
    logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Each example's loss: the squared error of a one-output model's number for float labels
    (regression), else the cross-entropy of its label, times that label's class weight
    (``--class-weights``) when given."""
    if labels.is_floating_point():
        return (logits.float().reshape(labels.shape) - labels.float()) ** 2
    losses = nn.functional.cross_entropy(logits, labels, reduction="none")
    return losses * class_weights[labels] if class_weights is not None else losses


def class_weight_vector(spec: str | list[float] | None, labels: Sequence[int], n_classes: int) -> torch.Tensor | None:
    """The weight of each class in the cross-entropy from ``--class-weights`` (as
    ``TrainConfig.parsed_class_weights`` reads it): ``balanced`` gives class c the weight
    n / (classes x count_c) of the training labels (scikit-learn's ``compute_class_weight``; a class
    absent from them gets weight 0), a list gives one weight per label id."""
    if spec is None:
        return None
    if spec == "balanced":
        counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=n_classes).double()
        weights = torch.where(counts > 0, len(labels) / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts))
        return weights.float()
    if len(spec) != n_classes:
        raise ConfigError(
            f"--class-weights gives {len(spec)} weights for {n_classes} labels (one per label, in id order)"
        )
    return torch.tensor(spec, dtype=torch.float32)


def micro_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None,
    global_count: int,
    parts: int,
    world_size: int,
    class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to back-propagate for one micro-batch, and the (detached) summed loss of its real
    examples for logging.

    The loss is the mean over the global batch of :func:`example_losses` (cross-entropy, weighted by
    ``class_weights`` when given; squared error for regression). Scaled so that, once DDP has
    averaged the gradients over ``world_size`` ranks and the accumulation steps have added up, the
    gradient is that of the mean loss over the global batch's ``global_count`` real examples: the
    same optimisation on 1 or N processes, with or without accumulation. Weight-0 fill rows
    contribute nothing. With one process and no accumulation it is exactly the model's own mean
    cross-entropy (bit-identical to before), and ``weights`` (all ones then) may be None.

    With class weights it is the mean of weight x cross-entropy over the examples (torch's weighted
    ``cross_entropy`` divides by the batch's summed weights instead, which would depend on how a
    global batch is split over processes).
    """
    if parts == 1:
        if class_weights is None and not labels.is_floating_point():
            loss = nn.functional.cross_entropy(logits, labels)
        else:
            loss = example_losses(logits, labels, class_weights).mean()
        return loss, loss.detach().float() * labels.shape[0]
    per_example = example_losses(logits, labels, class_weights) * weights
    summed = per_example.sum()
    return summed * (world_size / global_count), summed.detach().float()


#: How a batch becomes logits: ``(model, batch) -> logits`` (see ``training.batches``).
Logits = Callable[[nn.Module, dict], torch.Tensor]


class TrainStep:
    """One optimizer step, phase by phase: for each micro-batch, :meth:`loss` (the forward pass
    under autocast) and :meth:`backward`, inside :meth:`sync`; after the global batch's last one,
    :meth:`clip` and :meth:`update`. The benchmarks time each phase by calling them one by one.

    ``model`` and ``optimizer`` go through ``accelerator.prepare`` (DDP under a launcher);
    ``scheduler`` is stepped once per optimizer step by every rank (it is not given to accelerate,
    whose wrapper would step it once per process). fp16 gets a loss scaler; ``compile`` runs the
    forward pass through ``torch.compile``.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        accelerator,
        autocast_dtype: torch.dtype | None,
        *,
        max_grad_norm: float = 1.0,
        grad_accum: int = 1,
        compile: bool = False,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        self.accelerator, self.scheduler = accelerator, scheduler
        self.class_weights = class_weights.to(accelerator.device) if class_weights is not None else None
        self.device, self.world = accelerator.device, accelerator.num_processes
        self.parts = self.world * grad_accum
        self.autocast_dtype, self.max_grad_norm = autocast_dtype, max_grad_norm
        self.scaler = torch.amp.GradScaler(self.device.type) if autocast_dtype == torch.float16 else None
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.unwrapped = accelerator.unwrap_model(self.model)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.forward = torch.compile(self.model) if compile else self.model
        self.lean_dtype = lean_autocast_dtype(autocast_dtype, accelerator.distributed_type.value)

    def context(self, cpu_dropout: bool = True, lean: bool = True):
        """:func:`step_context` for this model, device and precision."""
        return step_context(self.unwrapped, self.device, self.lean_dtype, cpu_dropout, lean)

    def sync(self, last_of_step: bool = True):
        """Where a micro-batch's forward and backward run: gradients are synchronised across ranks
        only after the last micro-batch of an optimizer step."""
        return contextlib.nullcontext() if last_of_step else self.accelerator.no_sync(self.model)

    def loss(
        self, logits: Logits, batch: dict, weights: torch.Tensor | None = None, global_count: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`micro_loss` of ``batch`` (weights and ``global_count``: see there; not needed
        on one process without accumulation)."""
        with autocast(self.device, self.autocast_dtype):
            return micro_loss(
                logits(self.forward, batch),
                batch["labels"],
                weights,
                global_count,
                self.parts,
                self.world,
                self.class_weights,
            )

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(self.scaler.scale(loss) if self.scaler is not None else loss)

    def clip(self) -> None:
        """Unscale (fp16) and clip the gradient norm to ``max_grad_norm`` (0: no clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.trainable, self.max_grad_norm)

    def update(self) -> None:
        """The optimizer and schedule step; gradients are freed."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
