"""Per-user state: contexts and the stores that hold them.

Per-user state: the context (a user's recent events, its update rule) and the stores that
hold contexts and latest lists, written once per batch.

Imports the base modules and :mod:`stream.contracts`.
"""
