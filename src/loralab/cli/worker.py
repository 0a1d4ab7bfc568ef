"""The process that trains one run of a study: ``python -m loralab.cli.worker ... -- FLAGS``.

It is ``loralab train FLAGS`` (the same parser, errors and run directory) with four guards a
study needs around it:

1. it dies with the ``study run`` that started it (``PR_SET_PDEATHSIG`` on Linux, and a thread
   that watches the parent pid everywhere), so a killed study leaves no orphan training on;
2. it holds the run's lock while it trains, so two processes never write the same run;
3. under the lock, a run that is already complete is not trained again, and stale staging
   folders of this run (from a killed attempt) are removed;
4. it caps the torch threads (``--threads``), so that ``--jobs N`` processes share the cores;
5. with ``--processes P`` > 1 (a run given P GPUs), it launches the training data-parallel as
   ``torchrun --standalone --nproc_per_node P -m loralab train FLAGS`` and waits for it, still
   holding the lock (the training ranks die with this worker).

The recorded command of the run (``config.json``) is the plain ``loralab train FLAGS`` line.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

from loralab.experiments.folder import StudyFolder, file_lock
from loralab.experiments.launch import parent_death_signal, train_launcher


def die_with_parent(parent_pid: int) -> None:
    """Exit as soon as ``parent_pid`` is no longer this process's parent."""
    parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(137)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(137)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loralab.cli.worker")
    p.add_argument("--study", required=True, help="the study folder")
    p.add_argument("--run-id", required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--processes", type=int, default=1, help="data-parallel processes (one per GPU given)")
    p.add_argument("train_flags", nargs=argparse.REMAINDER, help="-- then the `loralab train` flags")
    args = p.parse_args(argv)
    flags = args.train_flags[1:] if args.train_flags[:1] == ["--"] else args.train_flags

    die_with_parent(args.parent_pid)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    folder = StudyFolder(Path(args.study))
    with file_lock(folder.lock_path(args.run_id)):
        if folder.is_complete(args.run_id):
            print(f"{args.run_id}: already complete", flush=True)
            return 0
        if folder.remove_stale_staging(args.run_id):
            print(f"{args.run_id}: removed the staging folder of an earlier, killed attempt", flush=True)
        if folder.run_dir(args.run_id).exists():
            flags = [*flags, "--overwrite"]  # an incomplete folder not made by loralab: replace it
        from loralab.cli import main as cli_main
        from loralab.training.checkpoint import checkpoint_dir

        if (checkpoint_dir(folder.run_dir(args.run_id)) / "latest.json").is_file():
            print(f"{args.run_id}: resuming from the checkpoint of an earlier, killed attempt", flush=True)
            flags = [*flags, "--resume"]
        if args.processes > 1:
            return _torchrun(args.processes, flags)
        sys.argv = ["loralab", "train", *flags]  # what `loralab train` records as the run's command
        return cli_main(["train", *flags])


def _torchrun(processes: int, flags: list[str]) -> int:
    import subprocess

    cmd = [*train_launcher(processes), "train", *flags]
    print("launching: " + " ".join(cmd), flush=True)
    # preexec_fn: the worker runs no other threads that could hold a lock at fork time but its watchdog
    proc = subprocess.Popen(cmd, preexec_fn=functools.partial(parent_death_signal, signal.SIGTERM))  # noqa: PLW1509
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise


if __name__ == "__main__":
    sys.exit(main())
