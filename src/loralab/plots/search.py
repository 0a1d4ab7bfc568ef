"""The figures of ``loralab tune report``: Optuna's matplotlib views of a search.

Optuna draws only through pyplot (and sets its own style sheet), so the views are drawn inside
:func:`.output.pyplot_scope`: the caller's backend and rcParams are as they were afterwards.
"""

from __future__ import annotations

import warnings

from loralab.plots.output import figure_bytes, pyplot_scope


def search_views(study, pruned: bool) -> dict[str, tuple[bytes, str]]:
    """``{file name: (PNG bytes, caption)}`` of Optuna's views; a view that needs more trials is left out.

    ``study`` is an ``optuna.Study``; ``pruned``: the search has a pruner, so the per-epoch values
    (``intermediate.png``) are drawn too.
    """
    import optuna.visualization.matplotlib as vis

    views = {
        "history.png": (vis.plot_optimization_history, "optimisation history (best value so far)"),
        "importances.png": (vis.plot_param_importances, "parameter importances (PED-ANOVA)"),
        "slice.png": (vis.plot_slice, "validation metric against each parameter"),
    }
    if pruned:
        views["intermediate.png"] = (vis.plot_intermediate_values, "validation metric after each epoch (pruning)")
    out = {}
    with pyplot_scope() as plt:
        for name, (fn, caption) in views.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    axes = fn(study)
                except (ValueError, RuntimeError, ZeroDivisionError):
                    continue
            ax = axes.flat[0] if hasattr(axes, "flat") else axes
            fig = ax.figure
            if name == "slice.png":  # one panel per parameter, then Optuna's colour bar: leave it room
                fig.set_size_inches(3.6 * len(getattr(axes, "flat", [axes])) + 1.5, 3.8)
            else:
                fig.tight_layout()
            out[name] = (figure_bytes(fig, "png", dpi=110), caption)
            plt.close(fig)
    return out
