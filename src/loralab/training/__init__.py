"""Training a model in place: the loop (``loop.fit``), what wraps and runs each optimizer step
(``step``), the batches a step reads (``batches``) and the progress lines of an epoch (``progress``).

Nothing is re-exported here: import from the module that owns the name.
"""
