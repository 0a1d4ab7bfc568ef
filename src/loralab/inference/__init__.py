"""Scoring texts with trained models: batched logits (:mod:`.batched`), the one :class:`Predictor`
that evaluation, ``predict`` and ``serve`` share (:mod:`.predictor`; over ONNX Runtime:
:mod:`.onnx`; the rows both return: :mod:`.rows`), and many LoRA adapters over
one backbone in mixed batches (:mod:`.adapters`, its rules in :mod:`.registry`, its layers in
:mod:`.multilora`)."""
