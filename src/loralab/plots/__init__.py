"""Every figure loralab draws, and the rule they share: the process's matplotlib backend is left alone.

Figures are ``matplotlib.figure.Figure`` objects, never pyplot's, so drawing them needs no display
and does not change the backend of the process (a notebook's stays as it is). Optuna draws only
through pyplot; :func:`.output.pyplot_scope` lends it Agg and gives everything back afterwards.

| module | the figures |
|---|---|
| :mod:`.run` | one run: training curves, confusion matrix (``curves.png/.pdf``, ``confusion_matrix.png``) |
| :mod:`.analysis` | ``loralab analyze``: the reliability diagram |
| :mod:`.study` | ``loralab study report``: accuracy vs parameters / an option, curves, confusion matrices |
| :mod:`.search` | ``loralab tune report``: Optuna's views of a search |
| :mod:`.output` | figures to PNG bytes or files; the scoped pyplot for Optuna |

Only :mod:`.run` is imported here (training draws it); the others are imported by their callers.
"""

from loralab.plots.run import plot_confusion, plot_curves

__all__ = ["plot_confusion", "plot_curves"]
