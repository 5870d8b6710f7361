"""The learned router's cost/quality trade-off on a public labelled data set of model
comparisons: RouteLLM's MMLU responses (github.com/lm-sys/RouteLLM,
`routellm/evals/mmlu/responses/*.csv`: each MMLU question with whether Mixtral-8x7B-Instruct
(the cheap model) and GPT-4-1106-preview (the strong one) answered it correctly).

The data is not in this repository; point the script at a directory of those CSV files:

    git clone --depth 1 https://github.com/lm-sys/RouteLLM /tmp/RouteLLM
    python benches/learned_router_mmlu.py /tmp/RouteLLM/routellm/evals/mmlu/responses

A question is labelled `cheap_ok` when the cheap model is right or the strong one is wrong
too (sending it to the strong model would not have helped). The rows are split 60/20/20:
the classifier is fitted on the first part, its threshold calibrated on the second, and the
figures are measured on the third, which neither step saw. Accuracy is the routed answers'
real MMLU accuracy; "strong calls" is the share of questions sent to the strong model (the
cost driver). Random routing with the same share of strong calls is the baseline a learned
router must beat; the `cost` strategy is all-cheap and the `quality` strategy all-strong.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from hybridfast.experiments.learned import calibrate, embed_all, fit, predict


def load(directory: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    prompts: list[str] = []
    cheap: list[bool] = []
    strong: list[bool] = []
    for path in sorted(directory.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader)  # prompt, <cheap model>, <strong model>
            for prompt, cheap_right, strong_right in reader:
                prompts.append(prompt)
                cheap.append(cheap_right == "True")
                strong.append(strong_right == "True")
    return prompts, np.array(cheap), np.array(strong)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prompts, cheap, strong = load(args.directory)
    if not prompts:
        print(f"no CSV files in {args.directory}", file=sys.stderr)
        return 1
    ok = (cheap | ~strong).astype(np.float64)
    order = np.random.default_rng(args.seed).permutation(len(prompts))
    a, b = int(len(order) * 0.6), int(len(order) * 0.8)
    train, cal, test = order[:a], order[a:b], order[b:]
    x = embed_all(prompts)
    w = fit(x[train], ok[train])
    p_cal, p_test = predict(w, x[cal]), predict(w, x[test])
    rng = np.random.default_rng(args.seed + 1)
    strong_acc = strong[test].mean()
    print(f"{len(prompts)} questions; test split {len(test)}")
    print(f"cost strategy (all cheap):     accuracy {cheap[test].mean():.3f}, strong calls 0%")
    print(f"quality strategy (all strong): accuracy {strong_acc:.3f}, strong calls 100%")
    print("target | threshold | strong calls | accuracy (% of strong) | random, same calls")
    for target in (0.90, 0.95, 0.98, 0.99):
        t = calibrate(p_cal, ok[cal], target).threshold
        to_cheap = p_test >= t
        accuracy = np.where(to_cheap, cheap[test], strong[test]).mean()
        share = 1.0 - to_cheap.mean()
        random_cheap = rng.random(len(test)) >= share
        random_acc = np.where(random_cheap, cheap[test], strong[test]).mean()
        relative, random_relative = accuracy / strong_acc, random_acc / strong_acc
        print(
            f"{target:.2f}   | {t:.3f}     | {share:6.1%}       | {accuracy:.3f} "
            f"({relative:.1%})        | {random_acc:.3f} ({random_relative:.1%})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
