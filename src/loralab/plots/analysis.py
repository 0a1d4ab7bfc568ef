"""The figure of ``loralab analyze`` (and of a study report's best cell): the reliability diagram."""

from __future__ import annotations

from matplotlib.figure import Figure

from loralab.plots.output import figure_bytes


def reliability_png(result: dict, title: str) -> bytes:
    """Reliability diagram of an analysis result (:func:`loralab.evaluation.analysis.analyze`): accuracy per
    confidence bin against the diagonal, the bin counts below."""
    cal = result["calibration"]
    width = 1.0 / cal["n_bins"]
    fig = Figure(figsize=(5, 5.5))
    ax, axn = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    lows = [b["low"] for b in cal["bins"]]
    ax.bar(
        lows,
        [b["accuracy"] for b in cal["bins"]],
        width=width,
        align="edge",
        edgecolor="black",
        color="C0",
        alpha=0.8,
        label="accuracy",
    )
    ax.scatter(
        [b["confidence"] for b in cal["bins"]],
        [b["accuracy"] for b in cal["bins"]],
        color="C3",
        zorder=3,
        s=18,
        label="(mean confidence, accuracy)",
    )
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE {cal['ece']:.3f}, {result['examples']} examples", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    axn.bar(lows, [b["n"] for b in cal["bins"]], width=width, align="edge", edgecolor="black", color="C7")
    axn.set_xlim(0, 1)
    axn.set_xlabel("confidence (top softmax probability)")
    axn.set_ylabel("examples")
    return figure_bytes(fig, "png", dpi=110)
