"""The figures of one run: its training curves (``curves.png``, ``curves.pdf``) and its
confusion matrix, drawn on ``Figure`` objects (no pyplot, see :mod:`loralab.plots`)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from loralab.plots.output import save_figure


def plot_curves(history: list[dict], out_dir: Path, title: str) -> None:
    """Loss (training steps and validation per epoch) and validation accuracy per epoch."""
    steps = [r for r in history if r["kind"] == "step" and r.get("train_loss") is not None]
    epochs = [r for r in history if r["kind"] == "epoch"]
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    if steps:  # markers when there are few points, so that a short run's curve is visible
        ax1.plot(
            [r["step"] for r in steps],
            [r["train_loss"] for r in steps],
            "o-" if len(steps) < 30 else "-",
            label="train loss",
            alpha=0.7,
            markersize=3,
        )
    if epochs:
        ax1.plot([r["step"] for r in epochs], [r["val_loss"] for r in epochs], "o-", label="validation loss")
        ax2.plot([r["epoch"] for r in epochs], [r["val_accuracy"] for r in epochs], "o-", color="C2")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("cross-entropy")
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend()
    ax1.set_title("loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy")
    ax2.set_title("accuracy")
    fig.suptitle(title)
    for fmt in ("png", "pdf"):
        save_figure(fig, out_dir / f"curves.{fmt}", fmt)


def plot_confusion(matrix: list[list[int]], label_names: list[str], out_path: Path, title: str) -> None:
    """Counts of (true, predicted) labels, darker for more."""
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    n = len(label_names)
    ax.set_xticks(range(n), label_names)
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(r) for r in matrix) or 1
    for i in range(n):
        for j in range(n):
            ax.text(
                j, i, str(matrix[i][j]), ha="center", va="center", color="white" if matrix[i][j] > peak / 2 else "black"
            )
    ax.set_title(title)
    save_figure(fig, out_path, "png")
