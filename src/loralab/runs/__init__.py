"""The run directory and exports on disk: their layout (:mod:`.layout`), a run's weights saved and
loaded (:mod:`.weights`), and exports and plain transformers folders read back (:mod:`.exported`)."""
