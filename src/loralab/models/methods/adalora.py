"""AdaLoRA (``--method adalora``; Zhang et al., ICLR 2023): its peft config, the schedule that
prunes its rank budget as the optimizer steps, and its rank pattern when the adapter is saved.

AdaLoRA writes each update as ``P·Λ·Q`` (peft's ``lora_B``, ``lora_E``, ``lora_A``), starts every
adapted layer at ``--rank`` and, from sensitivity scores of the gradients, zeroes the least
important singular values until the average rank is ``--target-rank``. Two things peft leaves to
the trainer are done here, by hooks on the optimizer (:class:`AdaLoraSchedule`, attached once by
``training.loop.fit`` through :func:`loralab.models.methods.attach_training_hooks`):

- ``update_and_allocate`` after every optimizer step, while the gradients still exist (peft's
  contract: after ``optimizer.step()``, before ``zero_grad()``; loralab's ``TrainStep.update`` does
  both in one call, hence a post-step hook rather than a call in the loop);
- the orthogonal regulariser ``mean ‖PᵀP − I‖_F, ‖QQᵀ − I‖_F`` (peft adds it to ``outputs.loss``
  only when the model computes the loss itself; loralab computes the loss from the logits), added
  to the gradients before each step, after gradient clipping.

The allocator's sensitivity averages, the rank pattern and the step count travel in the
optimizer's state dict, so a checkpoint (which saves it) resumes the schedule exactly.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from loralab.config import MethodConfig
from loralab.models.description import Backbone
from loralab.models.methods.lora import placement

#: The schedule as fractions of the run's optimizer steps, from the AdaLoRA paper's SST-2 setting
#: (DeBERTaV3-base, 24 epochs of batch 32 = ~50,500 steps): t_i 6,000 steps of warm-up at the full
#: budget, the budget then shrinks (cubically) until the last t_f 22,000 steps, re-allocated every
#: ΔT = 100 steps; orthogonal regularisation γ = 0.1.
TINIT_FRACTION = 0.12
TFINAL_FRACTION = 0.44
DELTA_T_FRACTION = 1 / 500
ORTH_REG_WEIGHT = 0.1
#: The key of the schedule's state in the optimizer's state dict (see the module docstring)
STATE_KEY = "loralab_adalora"


def adalora_config(targets: list[str], layers: list[int] | None, family: Backbone, cfg: MethodConfig, heads):
    """The ``peft.AdaLoraConfig`` of ``cfg``; its schedule (``total_step``...) is set by
    :class:`AdaLoraSchedule` once the number of steps is known (1 until then)."""
    from peft import AdaLoraConfig

    return AdaLoraConfig(
        task_type="SEQ_CLS",
        init_r=cfg.rank,
        target_r=cfg.adalora_target_rank(),
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        **placement(targets, layers, family, heads),
        orth_reg_weight=ORTH_REG_WEIGHT,
        total_step=1,
    )


def schedule_for(total_steps: int) -> dict[str, int]:
    """AdaLoRA's ``total_step``, ``tinit``, ``tfinal`` and ``deltaT`` for a run of ``total_steps``."""
    total = max(int(total_steps), 1)
    return {
        "total_step": total,
        "tinit": int(TINIT_FRACTION * total),
        "tfinal": int(TFINAL_FRACTION * total),
        "deltaT": max(1, round(DELTA_T_FRACTION * total)),
    }


def tuner_of(model: nn.Module):
    """The ``AdaLoraModel`` inside a peft model (or None)."""
    from peft.tuners.adalora import AdaLoraModel

    base = getattr(model, "base_model", None)
    return base if isinstance(base, AdaLoraModel) else None


def singular_values(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each adapted layer's ``lora_E`` (its singular values) by parameter name, in a peft model or
    in the HF model inside it (``tuner.model``: the names peft's rank patterns use)."""
    tuner = tuner_of(model)
    inner = tuner.model if tuner is not None else model
    return {n: p for n, p in inner.named_parameters() if ".lora_E." in f".{n}."}


def rank_pattern_of(model: nn.Module) -> dict[str, list[bool]]:
    """Which singular values of each layer are in use (nonzero): peft's ``rank_pattern``."""
    return {n: (p.detach() != 0).view(-1).tolist() for n, p in singular_values(model).items()}


class AdaLoraSchedule:
    """Drives an AdaLoRA model's rank budget from ``optimizer``'s steps (see the module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.tuner = tuner_of(model)
        self.adapter = self.tuner.trainable_adapter_name
        self.config = self.tuner.peft_config[self.adapter]
        for key, value in schedule_for(total_steps).items():
            setattr(self.config, key, value)
        self.steps = 0
        optimizer.register_step_pre_hook(self._regularise)
        optimizer.register_step_post_hook(self._allocate)
        optimizer.register_state_dict_post_hook(self._save)
        optimizer.register_load_state_dict_pre_hook(self._load)

    def _factors(self) -> list[tuple[str, nn.Parameter]]:
        return [
            (n, p)
            for n, p in self.tuner.model.named_parameters()
            if ("lora_A" in n or "lora_B" in n) and self.adapter in n and p.grad is not None
        ]

    def _regularise(self, optimizer, args, kwargs) -> None:
        """Add the gradient of ``γ · mean_i ‖covariance_i − I‖_F`` (peft's ``AdaLoraModel.forward``)."""
        weight = self.config.orth_reg_weight
        factors = self._factors()
        if weight <= 0 or not factors:
            return
        with torch.enable_grad():
            terms = []
            for name, p in factors:
                cov = p @ p.T if "lora_A" in name else p.T @ p
                eye = torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)
                terms.append(torch.linalg.matrix_norm(cov - eye))
            loss = weight * torch.stack(terms).mean()
            grads = torch.autograd.grad(loss, [p for _, p in factors])
        for (_, p), g in zip(factors, grads, strict=True):
            p.grad.add_(g.to(p.grad.dtype))

    def _allocate(self, optimizer, args, kwargs) -> None:
        self.steps += 1
        if self.steps > self.config.total_step - self.config.tfinal and not self.config.rank_pattern:
            self.config.rank_pattern = rank_pattern_of(self.tuner.model)  # a checkpoint made before this state existed
        self.tuner.update_and_allocate(self.steps)

    def _save(self, optimizer, state_dict: dict) -> dict:
        alloc = self.tuner.rankallocator
        state_dict[STATE_KEY] = {
            "steps": self.steps,
            "rank_pattern": self.config.rank_pattern,
            "ipt": dict(alloc.ipt),
            "exp_avg_ipt": dict(alloc.exp_avg_ipt),
            "exp_avg_unc": dict(alloc.exp_avg_unc),
        }
        return state_dict

    def _load(self, optimizer, state_dict: dict) -> dict:
        state_dict = dict(state_dict)
        saved = state_dict.pop(STATE_KEY, None)
        if saved is None:
            return state_dict
        devices = {n: p.device for n, p in self.tuner.model.named_parameters()}
        alloc = self.tuner.rankallocator
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(alloc, key, {n: t.to(devices.get(n, t.device)) for n, t in saved[key].items()})
        self.steps = saved["steps"]
        self.config.rank_pattern = saved["rank_pattern"]
        return state_dict


@contextlib.contextmanager
def saved_rank_pattern(model: nn.Module) -> Iterator[None]:
    """Within the block, the adapter's ``rank_pattern`` is the singular values in use *now*, so that
    peft saves exactly the model as it is (also when the best epoch restored came before the final
    allocation); peft rewrites the pattern's keys while saving, the one in force comes back after.
    A layer pruned to rank 0 is saved as empty matrices (peft warns about those as if they were
    unsaved shards: silenced here, they reload as rank 0)."""
    tuner = tuner_of(model)
    config = tuner.peft_config["default"]
    before = config.rank_pattern
    config.rank_pattern = rank_pattern_of(tuner.model)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LoRA tensor\(s\) have invalid shape")
            yield
    finally:
        config.rank_pattern = before
