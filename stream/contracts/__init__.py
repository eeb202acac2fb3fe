"""The contracts: what crosses the worker's boundary, defined once and versioned.

The event, catalogue, recommendation, dead-letter and search records with their parsers and
JSON Schemas (:mod:`.records`, ``schemas/``), and the model directory a worker loads
(:mod:`.manifest`: files, hashes, tensors, event type ids). Imports only the base modules
(:mod:`stream.errors`, :mod:`stream.settings`).
"""
