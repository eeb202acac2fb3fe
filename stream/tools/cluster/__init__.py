"""What every tool drives: broker, workers, topics, the output reader.

What every tool drives: the embedded broker, worker subprocesses, topic creation and the one
reader of the worker's output topics.

Imports the worker runtime only (base modules, contracts).
"""
