"""A learned router: a logistic classifier on the prompt's MiniLM embedding predicts whether
the cheap model's answer will do; a threshold calibrated for a target quality decides.

Training (`hybridfast experiments train-router`) reads labelled rows `{"prompt": ...,
"cheap_ok": true|false}` (from a judged comparison), embeds the prompts
with the gateway's local MiniLM embedder, fits the classifier on one part and calibrates on
the rest: the threshold is the lowest at which the routed quality — the share of requests
answered well, counting a strong-model answer as good and a cheap one as good when
`cheap_ok` — stays at or above the target. A lower threshold sends more to the cheap model.
The model file (`.npz`) holds the weights, the threshold and the calibration figures.
`--from-feedback` trains on the gateway's own feedback instead (`experiments/training.py`).

Serving: `strategy: custom`, `router: learned`, `options: {model: router.npz, cheap: NAME}`
(NAME a model group or deployment id among the route's candidates). A `before_route` hook
(`experiments/learned_hooks.py`) embeds the last user message of requests for such routes
(on a worker thread) and keeps the probability for the router, which puts the cheap
candidates first when it clears the threshold and last otherwise (they stay as fallbacks).
A request the hook did not see (the router called directly) goes to the strong candidates
first: the safe side.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridfast.embeddings.local import load_embedder
from hybridfast.errors import ConfigError
from hybridfast.routing.custom import Candidate
from hybridfast.types import Caller, Deployment, RequestFeatures

Vector = npt.NDArray[np.float32]
EMBEDDER = "minilm"
ROUTER_NAME = "learned"
# How a route names this router: the entry point, or its dotted path.
ROUTER_SPECS = (ROUTER_NAME, "hybridfast.experiments.learned:LearnedRouter")
# Probabilities computed by the hook and not yet read by a router (a cache hit never
# reaches the router): the oldest are dropped past this many.
MAX_PENDING = 10_000


def fit(x: Vector, y: npt.NDArray[np.float64], l2: float = 1e-3, steps: int = 500) -> Vector:
    """Logistic regression by full-batch gradient descent: weights with the bias last."""
    features = np.hstack([x, np.ones((len(x), 1), dtype=np.float32)]).astype(np.float64)
    w = np.zeros(features.shape[1])
    rate = 1.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(features @ w)))
        grad = features.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0]
        w -= rate * grad
    return w.astype(np.float32)


def predict(w: Vector, x: Vector) -> npt.NDArray[np.float64]:
    z = x.astype(np.float64) @ w[:-1].astype(np.float64) + float(w[-1])
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


@dataclass(frozen=True)
class TradeOff:
    threshold: float
    cheap_share: float  # the share of requests sent to the cheap model
    quality: float  # the share answered well (strong answers count as good)


def trade_off(p: npt.NDArray[np.float64], ok: npt.NDArray[np.float64], t: float) -> TradeOff:
    cheap = p >= t
    bad = np.count_nonzero(cheap & (ok < 0.5))
    return TradeOff(t, float(cheap.mean()), 1.0 - bad / len(ok))


def calibrate(p: npt.NDArray[np.float64], ok: npt.NDArray[np.float64], target: float) -> TradeOff:
    """The lowest threshold (the most cheap traffic) whose quality meets `target`."""
    best = trade_off(p, ok, 1.0 + 1e-9)  # everything to the strong model
    for t in sorted({float(v) for v in p}, reverse=True):
        candidate = trade_off(p, ok, t)
        if candidate.quality < target:
            break
        best = candidate
    return best


@dataclass(frozen=True)
class LearnedModel:
    weights: Vector
    threshold: float
    embedder: str = EMBEDDER

    def save(self, path: str | Path, **figures: float) -> None:
        arrays: dict[str, Any] = {k: np.float64(v) for k, v in figures.items()}
        arrays.update(
            weights=self.weights,
            threshold=np.float64(self.threshold),
            embedder=np.str_(self.embedder),
        )
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> LearnedModel:
        try:
            with np.load(path) as data:
                return cls(data["weights"], float(data["threshold"]), str(data["embedder"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the learned router model {str(path)!r}: {exc}",
                hint="train one with `hybridfast experiments train-router`",
            ) from None

    def probability(self, text: str) -> float:
        return self.probability_of(self.embed(text))

    def embed(self, text: str) -> Vector:
        vector: Vector = load_embedder(self.embedder).embed([text])[0]
        return vector

    def probability_of(self, vector: Vector) -> float:
        return float(predict(self.weights, vector[None, :])[0])


class _Pending:
    """request id -> P(cheap is good enough), bounded."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, request_id: str, p: float) -> None:
        with self._lock:
            self._items[request_id] = p
            while len(self._items) > MAX_PENDING:
                self._items.popitem(last=False)

    def pop(self, request_id: str) -> float | None:
        with self._lock:
            return self._items.pop(request_id, None)


PENDING = _Pending()


class LearnedRouter:
    """The `hybridfast.routers` entry point `learned`."""

    def __init__(self, model: str, cheap: str, threshold: float | None = None) -> None:
        self.model = LearnedModel.load(model)
        self.cheap = cheap
        self.threshold = self.model.threshold if threshold is None else threshold

    def is_cheap(self, deployment: Deployment) -> bool:
        return self.cheap in (deployment.name, deployment.id)

    def order(
        self,
        route: str,
        candidates: Sequence[Candidate],
        features: RequestFeatures,
        caller: Caller,
    ) -> list[Candidate]:
        p = PENDING.pop(features.request_id)
        cheap_first = p is not None and p >= self.threshold
        # sorted() is stable: within each side the core's order stays.
        return sorted(candidates, key=lambda c: self.is_cheap(c.deployment) != cheap_first)


def embed_all(texts: list[str], embedder: str = EMBEDDER, batch: int = 256) -> Vector:
    model = load_embedder(embedder)
    parts = [model.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return np.vstack(parts) if parts else np.zeros((0, 384), dtype=np.float32)


def train_from_rows(
    rows: Sequence[dict[str, Any]], target: float, holdout: float = 0.3, seed: int = 0
) -> tuple[LearnedModel, TradeOff, dict[str, float]]:
    """Fits on part of the rows, calibrates on the rest; the model, its calibrated trade-off
    and the figures of the baselines (all cheap, all strong) on the held-out part."""
    texts = [str(r["prompt"]) for r in rows]
    ok = np.array([1.0 if r["cheap_ok"] else 0.0 for r in rows])
    if len(rows) < 10 or ok.min() == ok.max():
        raise ConfigError(
            "training needs at least 10 rows with both labels (cheap_ok true and false)"
        )
    return train_from_vectors(embed_all(texts), ok, target, holdout, seed)


def train_from_vectors(
    x: Vector,
    ok: npt.NDArray[np.float64],
    target: float,
    holdout: float = 0.3,
    seed: int = 0,
    embedder: str = EMBEDDER,
) -> tuple[LearnedModel, TradeOff, dict[str, float]]:
    """`train_from_rows` on embeddings already computed (the feedback path keeps them)."""
    order = np.random.default_rng(seed).permutation(len(ok))
    cut = int(len(ok) * (1 - holdout))
    train, held = order[:cut], order[cut:]
    w = fit(x[train], ok[train])
    p_held = predict(w, x[held])
    chosen = calibrate(p_held, ok[held], target)
    baselines = {
        "all_cheap_quality": float(ok[held].mean()),
        "held_out": float(len(held)),
    }
    return LearnedModel(w, chosen.threshold, embedder), chosen, baselines
