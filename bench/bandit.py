"""Bandit simulation: two deployments with Bernoulli(0.05) and Bernoulli(0.10) rewards,
feedback for every request, 5,000 requests, allocations refreshed every 50 requests (as
the router does after each flush). Prints the share of the last 1,000 requests that
went to the better arm and the cumulative regret next to a fixed 50/50 split, same run.

    flock /tmp/scorefn-bench.lock .venv/bin/python bench/bandit.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.routing.bandit import simulate
from shared.routing.endpoint import BanditSpec

RATES = {"worse": 0.05, "better": 0.10}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    print(f"{'policy':<16}{'seed':>5}{'better share (last 1000)':>26}"
          f"{'regret':>9}{'50/50 regret':>14}{'ratio':>8}")  # fmt: skip
    for policy in ("thompson", "epsilon_greedy"):
        spec = BanditSpec(policy=policy)
        shares, ratios = [], []
        for seed in range(args.seeds):
            run = simulate(spec, RATES, requests=args.requests, seed=seed)
            fixed = simulate(spec, RATES, requests=args.requests, seed=seed,
                             fixed={"worse": 50, "better": 50})  # fmt: skip
            shares.append(run.last_share["better"])
            ratios.append(run.regret / fixed.regret)
            ratio = run.regret / fixed.regret
            print(f"{policy:<16}{seed:>5}{run.last_share['better']:>26.3f}"
                  f"{run.regret:>9.1f}{fixed.regret:>14.1f}{ratio:>8.3f}")  # fmt: skip
        print(f"{policy:<16}{'all':>5}{'min ' + format(min(shares), '.3f'):>26}"
              f"{'':>9}{'':>14}{statistics.mean(ratios):>8.3f}  (mean regret ratio)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
