"""Judging runs: classification metrics (:mod:`.metrics`), the statistics that compare cells of a
study (:mod:`.stats`; two cells, and a family of comparisons, in :mod:`.comparison`), the error
analysis of saved predictions (:mod:`.analysis`, its files :mod:`.analysis_files`) and the
results table of run directories (:mod:`.table`)."""
