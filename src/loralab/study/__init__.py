"""Studies: many runs described by one YAML file, executed resumably, compared with statistics.

| module         | what lives there                                                            |
|----------------|-----------------------------------------------------------------------------|
| ``spec``       | the study YAML: :class:`StudySpec` (validates itself), its cells             |
| ``identity``   | what a run id hashes (options resolved as training resolves them), the id    |
| ``plan``       | the spec bound to a folder: every (cell, seed) run, its id, dir and command  |
| ``folder``     | the study folder: layout, ``study.json``, ``failures.json``, locks, cleanup   |
| ``runner``     | runs every (cell, seed) in a fresh subprocess, skips finished runs, ``--jobs`` |
| ``worker``     | the subprocess entry point: ``python -m loralab.study.worker ... -- FLAGS``   |
| ``cost``       | the ``--dry-run`` cost estimate                                              |
| ``stats``      | t/Wilson intervals, bootstrap, exact McNemar/sign-flip, Holm, MDE             |
| ``aggregate``  | reads the finished runs back and summarises them per cell                    |
| ``report``     | package: numbers, findings, figures, ``report.md`` / ``.html`` / ``summary.csv`` |
| ``cli``        | ``loralab study run`` and ``loralab study report``                            |

The report reads only run directories and ``study.json``; nothing here reaches into training.
Nothing is imported here: ``loralab.cli`` imports ``loralab.study.cli`` at start-up, and the
modules above are loaded by the sub-command that needs them.
"""
