"""Kafka: the transport, ordered deliveries, and credentials.

Kafka: Faust's transport extended (whole fetches, verified end offsets, batches sent
whole), deliveries confirmed in order before events are acknowledged, and SSL/SASL settings.

Imports the base modules and :mod:`stream.telemetry`; never the scoring code.
"""
