"""The live catalogue: item records, item sets, and the follower that reads them.

The live catalogue: item records by id, the item set a model scores (:mod:`.items`), and the
follower every worker runs on the catalogue topic (:mod:`.follower`).

Imports the base modules, :mod:`stream.contracts`, :mod:`stream.telemetry`, :mod:`stream.kafka`
and :mod:`stream.state`. The follower drives the scoring pipeline it is handed; it names
:mod:`stream.processing` for types only.
"""
