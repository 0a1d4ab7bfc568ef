"""Training one run, from its config to its run directory: :mod:`.run` (``train``, ``load_run``,
``inspect_params``), the loop (:mod:`.loop`), one optimizer step (:mod:`.step`), which examples
each process trains on (:mod:`.sampler`), the batches a step reads (:mod:`.batches`), ``head``'s
cached features (:mod:`.headcache`), checkpoints (:mod:`.checkpoint`), experiment trackers
(:mod:`.tracking`) and the progress lines of an epoch (:mod:`.progress`).

Nothing is re-exported here: import from the module that owns the name.
"""
