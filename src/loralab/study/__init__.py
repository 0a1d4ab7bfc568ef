"""Studies: many runs described by one YAML file, executed resumably, compared with statistics.

| module           | what lives there                                                               |
|------------------|--------------------------------------------------------------------------------|
| ``spec``         | the study YAML: :class:`StudySpec` (validates itself), its cells                |
| ``tuned``        | the ``tune:`` key: one validated search per tuned cell                          |
| ``plan``         | the spec bound to a folder: every (cell, seed) run, its id, dir and command     |
| ``runner``       | runs every (cell, seed) in a fresh subprocess, skips finished runs, ``--jobs``  |
| ``ray_executor`` | the same on a Ray cluster (the loop: :mod:`loralab.experiments.ray`)            |
| ``cost``         | the ``--dry-run`` cost estimate                                                 |
| ``aggregate``    | reads the finished runs back and summarises them per cell                       |
| ``compare``      | one cell of one folder against one of another                                   |
| ``report``       | package: numbers, findings, figures, ``report.md`` / ``.html`` / ``summary.csv`` |

What searches share with studies (run ids, the folder and its locks, the worker process, the Ray
loop) is in :mod:`loralab.experiments`; the statistics are :mod:`loralab.evaluation.stats`; the
sub-commands are :mod:`loralab.cli.study`. The report reads only run directories and
``study.json``; nothing here reaches into training but :func:`loralab.training.run.load_run`.
"""
