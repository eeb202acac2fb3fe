"""Training and its checkpoints.

Training: fine-tuning and the ranker's fit with early stopping (:mod:`.train`), and the
checkpoints between training and export (:mod:`.checkpoint`).

Imports :mod:`model_export.data` and :mod:`model_export.model`.
"""
