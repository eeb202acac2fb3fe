import numpy as np
import pytest
import torch

from model_export.export.parity import ranker_inputs
from model_export.model.ranker import CLICK
from tests.helpers import searching_ranker, small_ranker


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


def test_the_prior_sums_the_histories_rows_as_a_histogram_of_clicks_would():
    """The prior reads the rows of each history's items: the same as a histogram times cooc."""
    ranker = small_ranker()
    inputs = ranker_inputs(ranker, 64, seed=6)
    known = torch.from_numpy(inputs["item_ids"])
    weights = torch.exp(ranker.recency) * (torch.from_numpy(inputs["event_types"]) == CLICK)
    weights = weights * (known > 0)
    histogram = torch.zeros(64, ranker.cooc.shape[0]).scatter_add(1, known, weights)
    with torch.no_grad():
        np.testing.assert_allclose(
            ranker._prior(known, weights.unsqueeze(1)).squeeze(1).numpy(),
            (histogram @ ranker.cooc).numpy(),
            atol=1e-5,
        )


def test_serving_adds_the_search_term_as_training_does():
    """The graph's search term at the last position equals training's at every position."""
    ranker = searching_ranker()
    inputs = {k: torch.from_numpy(v) for k, v in ranker_inputs(ranker, 64, seed=4).items()}
    dim = ranker.config.dim
    table = inputs["query_table"]
    with torch.no_grad():
        table = torch.cat([table[:, :dim], ranker.search_vectors(table[:, dim:])], dim=1)
    queries = table[inputs["query_ids"]]
    ages = inputs["event_ages"]
    # each position's time in days, near zero so that float32 keeps the seconds
    days = (1.0 - ages.double() / 86_400).float()
    with torch.no_grad():
        faded = ranker.faded_query(inputs["event_types"], queries[..., dim:], ages)
        served = ranker.logits(
            inputs["item_ids"], inputs["event_types"], queries[..., :dim], search_query=faded
        )
        every = ranker.all_logits(
            inputs["item_ids"],
            inputs["event_types"],
            queries[..., :dim],
            days=days,
            search_vecs=queries[..., dim:],
        )
        without = ranker.logits(inputs["item_ids"], inputs["event_types"], queries[..., :dim])
    np.testing.assert_allclose(served.numpy(), every[:, -1].numpy(), atol=1e-4)
    assert not np.allclose(served.numpy(), without.numpy())  # the term is there


def test_a_search_lifts_the_item_it_names_and_fades_as_the_user_moves_on():
    ranker = searching_ranker()
    length, named = ranker.config.history_length, 7
    query = ranker.item_text[named]

    def term(events_after: int, seconds: float) -> torch.Tensor:
        types = torch.zeros(1, length, dtype=torch.long)
        types[0, length - 1 - events_after] = 2  # the search
        types[0, length - events_after :] = 1  # clicks after it
        vecs = torch.zeros(1, length, query.shape[0])
        vecs[0, length - 1 - events_after] = query
        ages = torch.zeros(1, length)
        ages[0, length - 1 - events_after] = seconds
        with torch.no_grad():
            return ranker.search_term(ranker.faded_query(types, vecs, ages))[0]

    now = term(0, 0.0)
    assert int(now.argmax()) == named
    assert term(2, 0.0)[named] < now[named]  # two events later
    assert term(0, 3600.0)[named] < now[named]  # an hour later
    assert term(0, 0.0).abs().sum() > 0 and term(5, 86_400.0)[named] < 0.1 * now[named]


def test_the_graph_fades_the_query_table_as_the_history_would():
    """The exported path (weights summed per distinct query) equals the per-position sum."""
    ranker = searching_ranker()
    inputs = {k: torch.from_numpy(v) for k, v in ranker_inputs(ranker, 64, seed=6).items()}
    dim, table = ranker.config.dim, inputs["query_table"]
    with torch.no_grad():
        scaled = torch.cat([table[:, :dim], ranker.search_vectors(table[:, dim:])], dim=1)
        per_position = scaled[inputs["query_ids"]][..., dim:]
        history = ranker.faded_query(inputs["event_types"], per_position, inputs["event_ages"])
        graph = ranker.table_query(
            inputs["event_types"], inputs["event_ages"], inputs["query_ids"], table
        )
    assert history.abs().sum() > 0
    np.testing.assert_allclose(graph.numpy(), history.numpy(), atol=1e-5)


def test_an_items_clicks_replace_its_text_and_the_item_tower_still_rebuilds_it():
    """Text weighs k / (k + clicks); id part + the whole text projection = the trained vector."""
    ranker = searching_ranker()
    clicks = torch.zeros(31)
    clicks[1], clicks[2] = 0.0, 95.0
    ranker.set_item_clicks(clicks)
    k = ranker.config.text_prior_clicks
    assert ranker.text_weight[1] == 1.0 and ranker.text_weight[2] == pytest.approx(k / (k + 95))
    with torch.no_grad():
        projected = ranker.project_text(ranker.item_text)
        items = ranker.item_matrix()
        assert torch.allclose(items[2], ranker.item_emb.weight[2] + projected[2] * (k / (k + 95)))
        assert torch.allclose(ranker.id_parts()[1:] + projected[1:], items[1:], atol=1e-6)
        assert torch.equal(ranker.id_parts()[0], ranker.new_item)
        cold = torch.zeros(31, dtype=torch.bool)
        cold[2] = True  # shown as new in training: its text counts whole
        assert torch.allclose(ranker.item_matrix(cold)[2], ranker.new_item + projected[2])


def test_the_newest_search_is_answered_with_its_served_weight_and_older_ones_fade_as_learned():
    """Served, a search that is the newest event weighs ``search_answer_weight`` x learned."""
    ranker = searching_ranker()
    types = torch.tensor([[1, 2, 1, 2]])  # click, search, click, search (newest)
    lags = torch.tensor([[3, 2, 1, 0]])
    learned = torch.exp(ranker.search_fade.detach()[lags])
    with torch.no_grad():
        served = ranker.eval().search_weights(types, None, lags)
        trained = ranker.train().search_weights(types, None, lags)
    answer = ranker.config.search_answer_weight
    assert answer > 1.0
    assert torch.allclose(trained, learned * (types == 2))
    assert torch.allclose(served[0, 3], learned[0, 3] * answer)
    assert torch.allclose(served[0, :3], trained[0, :3])
