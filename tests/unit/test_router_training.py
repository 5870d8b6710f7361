"""Training rows from feedback: the join of kept embeddings and feedback on the request id,
the label (the cheap model's answers only, by the mean of the metric's values), the route
filter, and the clear refusals (too little data, mixed embedders, nothing stored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybridfast.config import parse_config
from hybridfast.errors import ConfigError
from hybridfast.experiments.feedback import SqliteStore as FeedbackSqlite
from hybridfast.experiments.training import (
    SqliteSamples,
    feedback_data,
    open_for_training,
    sample_row,
)


def _stores(n_cheap: int) -> tuple[SqliteSamples, FeedbackSqlite]:
    samples, feedback = SqliteSamples(None), FeedbackSqlite(None)
    for i in range(n_cheap):
        vector = np.full(4, i, dtype=np.float32)
        samples.add(sample_row(f"c{i}", "smart", "cheap#0", "cheap", "minilm", vector))
        # Two judgements each, means 1, 0.5 and 0 in turn: the mean decides.
        for value in ((1.0, 1.0), (1.0, 0.0), (0.0, 0.0))[i % 3]:
            feedback.add((i, f"c{i}", None, "good", value, None, "k", "smart", "cheap#0"))
        feedback.add((i, f"c{i}", None, "other", 0.0, None, "k", "smart", "cheap#0"))
    # Answered by the strong model: counted, never labelled.
    samples.add(sample_row("s0", "smart", "strong#0", "strong", "minilm", np.ones(4, np.float32)))
    feedback.add((0, "s0", None, "good", 1.0, None, "k", "smart", "strong#0"))
    # Another route, and a kept embedding nobody judged.
    samples.add(sample_row("o0", "other", "cheap#0", "cheap", "minilm", np.ones(4, np.float32)))
    feedback.add((0, "o0", None, "good", 0.0, None, "k", "other", "cheap#0"))
    samples.add(sample_row("u0", "smart", "cheap#0", "cheap", "minilm", np.ones(4, np.float32)))
    return samples, feedback


def test_the_cheap_models_judged_answers_become_labelled_rows() -> None:
    samples, feedback = _stores(12)
    data = feedback_data(samples, feedback, metric="good", cheap="cheap", route="smart")
    assert data.x.shape == (12, 4)
    assert data.x[3].tolist() == [3.0] * 4  # the vector kept for c3
    assert data.cheap_ok.tolist() == [1.0, 1.0, 0.0] * 4  # a mean of 0.5 is good by default
    assert (data.judged, data.strong, data.embedder) == (13, 1, "minilm")
    # Without the route filter the other route's judged answer joins; a deployment id works
    # as --cheap as well as the model group.
    everything = feedback_data(samples, feedback, metric="good", cheap="cheap#0")
    assert len(everything.cheap_ok) == 13
    # A stricter bar: a mean of 0.5 is not good enough at 0.75.
    strict = feedback_data(
        samples, feedback, metric="good", cheap="cheap", good=0.75, route="smart"
    )
    assert strict.cheap_ok.tolist() == [1.0, 0.0, 0.0] * 4


def test_too_little_feedback_is_a_clear_error() -> None:
    samples, feedback = _stores(9)
    with pytest.raises(ConfigError, match="too little feedback to train on: 10 judged") as err:
        feedback_data(samples, feedback, metric="good", cheap="cheap", route="smart")
    assert "at least 10" in str(err.value)
    samples, feedback = _stores(12)
    with pytest.raises(ConfigError, match="too little"):  # one label only
        feedback_data(samples, feedback, metric="good", cheap="cheap", good=2.0)


def test_samples_of_two_embedders_are_not_mixed() -> None:
    samples, feedback = _stores(12)
    samples.add(sample_row("h0", "smart", "cheap#0", "cheap", "hashing", np.ones(4, np.float32)))
    feedback.add((0, "h0", None, "good", 1.0, None, "k", "smart", "cheap#0"))
    with pytest.raises(ConfigError, match="several embedders"):
        feedback_data(samples, feedback, metric="good", cheap="cheap")


def test_training_needs_what_serve_stored(tmp_path: Path) -> None:
    memory = parse_config("ledger: {backend: memory}\n", "t.yaml", {}).config
    with pytest.raises(ConfigError, match="memory"):
        open_for_training(memory)
    text = f"ledger: {{backend: sqlite, path: {tmp_path / 'ledger.db'}}}\n"
    sqlite = parse_config(text, "t.yaml", {}).config
    with pytest.raises(ConfigError, match=r"no kept prompt embeddings at .*router-samples"):
        open_for_training(sqlite)
    assert not (tmp_path / "ledger-router-samples.db").exists()  # nothing created


def test_router_training_names_a_known_route() -> None:
    with pytest.raises(ConfigError, match=r"router_training.routes\[0\]: unknown model or route"):
        parse_config("router_training: {routes: [nope]}\n", "t.yaml", {})
