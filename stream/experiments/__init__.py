"""Experiments: arms, assignment and attribution.

Experiments: the experiment file, the stable assignment of users to arms, and which clicks
and purchases each arm's lists earned (attribution).

Imports the base modules, :mod:`stream.contracts` and :mod:`stream.telemetry`.
"""
