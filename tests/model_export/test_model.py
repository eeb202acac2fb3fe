import numpy as np
import torch

from model_export.parity import ranker_inputs
from tests.model_export.test_export import small_ranker


def test_serving_scores_the_last_position_as_training_does():
    """Serving runs the final block for the last position only: same scores as every position."""
    ranker = small_ranker()
    with torch.no_grad():
        ranker.age_weights.copy_(torch.tensor([0.5, -0.3, 0.2]))
    inputs = {k: torch.from_numpy(v) for k, v in ranker_inputs(ranker, 64, seed=3).items()}
    queries = inputs["query_table"][inputs["query_ids"]]
    days = inputs["user_days"].unsqueeze(-1).expand(-1, ranker.config.history_length)
    with torch.no_grad():
        served = ranker.logits(
            inputs["item_ids"], inputs["event_types"], queries, now=inputs["user_days"]
        )
        every = ranker.all_logits(inputs["item_ids"], inputs["event_types"], queries, days=days)
    np.testing.assert_allclose(served.numpy(), every[:, -1].numpy(), atol=1e-5)
