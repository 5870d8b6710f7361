"""Adaptive A/B over a route's deployments: a Thompson-sampling bandit on a feedback metric,
with a minimum sample and an explicit stopping rule.

Each arm (a deployment of the route) keeps a Beta posterior over its success rate: feedback
values in [0, 1] (a thumbs-up is 1, a thumbs-down 0, a score in between counts fractionally).
Until every arm has `min_samples` judged answers, the least judged arm goes first; then arms
are chosen by Thompson sampling (each request draws a rate from every posterior and the highest
draw goes first), so traffic shifts to the better arm as evidence grows. The experiment
**stops** when committing to the leading arm is expected to give up less than `max_loss` of the
metric against the true best (the expected-loss rule of Bayesian A/B testing, estimated by
drawing from the posteriors; two arms that are really equal stop on either at no loss): from
then on that arm goes first on every request and the others stay as fallbacks. Results per arm
carry a 95% Wilson interval, the probability of being best and the expected loss.

It runs as the route's custom router (`strategy: custom`, `router: bandit`, with `options:
{metric: thumbs_up, min_samples: 100, max_loss: 0.005}`), so the core still drops what cannot
serve (open circuits, capabilities, budget) before the bandit orders what remains.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridfast.routing.custom import Candidate
from hybridfast.types import Caller, Deployment, RequestFeatures

# Draws used to estimate the probability that each arm is best.
P_BEST_DRAWS = 4000
# The stopping rule is checked once per this many new judgements (each check draws
# P_BEST_DRAWS samples per arm: milliseconds, not for every feedback call).
CHECK_EVERY = 10


@dataclass(slots=True)
class Arm:
    successes: float = 0.0
    failures: float = 0.0

    @property
    def n(self) -> float:
        return self.successes + self.failures

    def draw(self, rng: random.Random) -> float:
        return rng.betavariate(1.0 + self.successes, 1.0 + self.failures)


def wilson(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate (fine for small samples)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Experiment:
    """One route's experiment: its arms' posteriors and whether it has stopped."""

    route: str
    metric: str
    min_samples: int = 100
    max_loss: float = 0.005
    arms: dict[str, Arm] = field(default_factory=dict)
    winner: str | None = None
    judged: int = 0
    rng: random.Random = field(default_factory=random.Random)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, arm: str, value: float) -> None:
        value = min(1.0, max(0.0, value))
        with self._lock:
            state = self.arms.setdefault(arm, Arm())
            state.successes += value
            state.failures += 1.0 - value
            self.judged += 1
            if self.winner is None and self.judged % CHECK_EVERY == 0:
                self._maybe_stop()

    def posterior(self) -> tuple[dict[str, float], dict[str, float]]:
        """Per arm: the probability it is the best, and the expected loss of committing to it
        (how much metric it gives up against the best arm, on average over the posteriors)."""
        names = list(self.arms)
        wins = dict.fromkeys(names, 0)
        loss = dict.fromkeys(names, 0.0)
        for _ in range(P_BEST_DRAWS):
            draws = {a: self.arms[a].draw(self.rng) for a in names}
            top = max(draws.values())
            wins[max(draws, key=draws.__getitem__)] += 1
            for a in names:
                loss[a] += top - draws[a]
        return (
            {a: wins[a] / P_BEST_DRAWS for a in names},
            {a: loss[a] / P_BEST_DRAWS for a in names},
        )

    def _maybe_stop(self) -> None:
        if len(self.arms) < 2 or min(a.n for a in self.arms.values()) < self.min_samples:
            return
        _, loss = self.posterior()
        best = min(loss, key=loss.__getitem__)
        if loss[best] < self.max_loss:
            self.winner = best

    def order(self, arms: Sequence[str]) -> list[str]:
        """The arms to try, first choice first."""
        known = {a: self.arms.get(a, Arm()) for a in arms}
        if self.winner in known:
            return [self.winner, *(a for a in arms if a != self.winner)]
        if min(s.n for s in known.values()) < self.min_samples:
            # The minimum sample first: the least judged arm goes first.
            return sorted(arms, key=lambda a: known[a].n)
        draws = {a: s.draw(self.rng) for a, s in known.items()}
        return sorted(arms, key=lambda a: -draws[a])

    def results(self) -> dict[str, Any]:
        with self._lock:
            p_best, loss = self.posterior()
            arms = []
            for name, arm in sorted(self.arms.items()):
                low, high = wilson(arm.successes, arm.n)
                arms.append(
                    {
                        "arm": name,
                        "n": round(arm.n, 3),
                        "mean": round(arm.successes / arm.n, 4) if arm.n else None,
                        "ci95": [round(low, 4), round(high, 4)],
                        "p_best": round(p_best.get(name, 0.0), 4),
                        "expected_loss": round(loss.get(name, 0.0), 5),
                    }
                )
        return {
            "route": self.route,
            "metric": self.metric,
            "min_samples": self.min_samples,
            "max_loss": self.max_loss,
            "status": "stopped" if self.winner else "running",
            "winner": self.winner,
            "arms": arms,
        }


class Experiments:
    """Every route's experiment in this process, by route name."""

    def __init__(self) -> None:
        self.by_route: dict[str, Experiment] = {}

    def get(self, route: str) -> Experiment | None:
        return self.by_route.get(route)

    def ensure(self, route: str, metric: str, min_samples: int, max_loss: float) -> Experiment:
        experiment = self.by_route.get(route)
        if experiment is None or experiment.metric != metric:
            experiment = self.by_route[route] = Experiment(route, metric, min_samples, max_loss)
        return experiment


# The process's experiments: the bandit routers (built by the router from config) and the
# feedback endpoint meet here.
EXPERIMENTS = Experiments()


class BanditRouter:
    """The custom router of a route under experiment (entry point `bandit`)."""

    def __init__(
        self, metric: str = "thumbs_up", min_samples: int = 100, max_loss: float = 0.005
    ) -> None:
        if not 0.0 < max_loss < 0.5:
            raise ValueError("max_loss must be between 0 and 0.5")
        if min_samples < 1:
            raise ValueError("min_samples must be at least 1")
        self.metric = metric
        self.min_samples = min_samples
        self.max_loss = max_loss

    def order(
        self,
        route: str,
        candidates: Sequence[Candidate],
        features: RequestFeatures,
        caller: Caller,
    ) -> Sequence[Candidate | Deployment | str]:
        experiment = EXPERIMENTS.ensure(route, self.metric, self.min_samples, self.max_loss)
        by_name = {c.deployment.id: c for c in candidates}
        return [by_name[a] for a in experiment.order(list(by_name))]
