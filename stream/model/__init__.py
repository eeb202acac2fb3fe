"""The model at serving time (no Faust).

The model at serving time: ONNX Runtime sessions and provider choice, input encoding and
list decoding (:mod:`.scorer`), the query encoder (:mod:`.queries`), click feedback for items
added after export (:mod:`.feedback`) and diversity re-ranking (:mod:`.diversity`). No Faust.

Imports the base modules, :mod:`stream.contracts`, :mod:`stream.state` and
:mod:`stream.catalogue` (the item set a batch is scored with).
"""
