"""Processing: from an event to a delivered list.

Processing: the per-event step (parse, dead-letter, context, submit), micro-batching, and
the scoring pipeline (models and their hot reload, experiment arms, list building, publish,
acknowledgement).

Imports every package below it: base, contracts, telemetry, kafka, state, experiments,
catalogue, model. Nothing here knows Faust's App or the web.
"""
