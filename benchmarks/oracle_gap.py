"""How far is a trained Discrete-SAC policy from the clairvoyant oracle on tiny instances?

    python benchmarks/oracle_gap.py [--requests 4] [--timesteps 30000] [--episodes 5]

Writes the tiny preset with ``--requests`` requests per episode to ``--out``/tiny-R.yaml,
trains Discrete-SAC on it (``train.py``), then runs ``evaluate.py --oracle`` over 101
preferences x ``--episodes`` episodes (the exact front of mean returns from exhaustive search
over every open plan sequence) with greedy and random beside it, and prints each method's
hypervolume as a fraction of the oracle's, with two reference points: the scenario's published
bounds (lenient: its reference point lies far beyond these short episodes) and the worst
value of each objective over the compared Pareto fronts (their nadir; strict: the fronts' own
spread).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--timesteps", type=int, default=30_000)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/oracle-gap")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from mec_env import load_scenario

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scenario = load_scenario("tiny").replace(
        name=f"tiny-{args.requests}", episode_requests=args.requests
    )
    path = out / f"tiny-{args.requests}.yaml"
    scenario.to_yaml(path)
    run = out / f"dsac-s{args.seed}"
    if not (run / "checkpoint.pt").exists():
        cmd = [sys.executable, "train.py", "--scenario", str(path), "--timesteps",
               str(args.timesteps), "--seed", str(args.seed), "--out", str(run), "--no-progress"]  # fmt: skip
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    table = {}
    for reference in ("scenario", "worst"):
        ev = out / f"eval-{reference}"
        cmd = [sys.executable, "evaluate.py", str(run), "--oracle", "--baselines", "greedy,random",
               "--episodes", str(args.episodes), "--reference-point", reference, "--out", str(ev),
               "--no-progress"]  # fmt: skip
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        doc = json.loads((ev / "results.json").read_text())
        (metrics,) = [s["metrics"] for s in doc["scenarios"].values()]
        oracle = metrics["oracle (clairvoyant)"]["hypervolume"]
        for name, m in metrics.items():
            table.setdefault(name, {})[reference] = m["hypervolume"] / oracle
    print(
        f"\ntiny preset, {args.requests} requests per episode, 101 preferences x {args.episodes} episodes; "
        f"Discrete-SAC trained for {args.timesteps:,} steps"
    )
    print(f"{'method':<40}{'HV / oracle (scenario ref)':>28}{'HV / oracle (worst ref)':>26}")
    for name, row in table.items():
        print(f"{name:<40}{row['scenario']:28.4f}{row['worst']:26.4f}")


if __name__ == "__main__":
    main()
