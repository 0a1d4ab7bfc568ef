"""Entry points for the multi-process tests: the real ``loralab`` CLI, with instrumentation that
records what each rank trained on (or breaks it on purpose), run under torch's launchers.

Used as ``python tests/dist_launch.py MODE OUT -- <loralab args>`` (also under ``torchrun``), or
through :func:`spawn_main` with ``torch.multiprocessing.spawn``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path


def _instrument(mode: str, out: Path) -> None:
    import torch

    from loralab.training import loop, sampler
    from loralab.training import step as train_step

    rank = int(os.environ.get("RANK", "0"))
    if mode in ("trace", "trace-and-kill"):
        original_iter = sampler.RankMicroBatches.__iter__

        def traced(self):
            with open(out / f"trace-rank{rank}.jsonl", "a", encoding="utf-8") as f:
                for mb in original_iter(self):
                    f.write(
                        json.dumps(
                            {
                                "epoch": self.batches.epoch,
                                "step": mb.step_index,
                                "indices": mb.indices,
                                "weights": mb.weights,
                                "last": mb.last_of_step,
                            }
                        )
                        + "\n"
                    )
                    f.flush()
                    yield mb

        sampler.RankMicroBatches.__iter__ = traced
        loop.RankMicroBatches = sampler.RankMicroBatches

        original_fit = loop.fit

        def fit_and_hash(model, *args, **kwargs):
            result = original_fit(model, *args, **kwargs)
            h = hashlib.sha256()
            for name, p in sorted(model.named_parameters()):
                if p.requires_grad:
                    h.update(name.encode())
                    h.update(p.detach().float().cpu().numpy().tobytes())
            (out / f"weights-rank{rank}.txt").write_text(h.hexdigest())
            (out / f"steps-rank{rank}.txt").write_text(str(result.steps))
            return result

        loop.fit = fit_and_hash
        import loralab.training.run

        loralab.training.run.fit = fit_and_hash
    if mode == "crash-rank1" and rank == 1:
        original_loss = train_step.micro_loss
        calls = {"n": 0}

        def failing(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected failure on rank 1")
            return original_loss(*args, **kwargs)

        train_step.micro_loss = failing
    if mode.startswith("kill-at-step-"):
        # SIGKILL this process when the optimizer is about to take step N (after earlier checkpoints)
        target = int(mode.rsplit("-", 1)[1])
        original_step = torch.optim.AdamW.step
        state = {"n": 0}

        def step(self, *args, **kwargs):
            state["n"] += 1
            if state["n"] == target:
                os.kill(os.getpid(), signal.SIGKILL)
            return original_step(self, *args, **kwargs)

        torch.optim.AdamW.step = step


def main(argv: list[str]) -> int:
    mode, out = argv[0], Path(argv[1])
    rest = argv[3:] if argv[2:3] == ["--"] else argv[2:]
    out.mkdir(parents=True, exist_ok=True)
    _instrument(mode, out)
    from loralab.cli import main as cli_main

    return cli_main(rest)


def spawn_main(rank: int, world: int, port: int, argv: list[str]) -> None:
    """``torch.multiprocessing.spawn`` target: the environment torchrun would set, then :func:`main`."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
    )
    rc = main(argv)
    if rc:
        raise SystemExit(rc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
