"""Environment steps and wall-clock time to 95 % of the final hypervolume, and peak memory.

    python benchmarks/training_curve.py --algo dsac --scenario default --timesteps 30000 --eval-every 3000
    python benchmarks/training_curve.py --algo ddpg --scenario default --timesteps 30000 --eval-every 3000

Runs ``train.py`` in a child process (default settings otherwise), then reads its
``progress.csv``: the periodic evaluation's hypervolume (11 preferences, the scenario's bounds)
against steps and wall time, and the child's peak resident memory (target: under 4 GB). The
scenario's bounds put every sensible policy's normalised hypervolume near 1, so "95 % of the
final hypervolume" is reached at once; the informative figure is the first evaluation reaching
95 % of the final *gain over the random policy* (random's hypervolume measured here on the same
preferences and episode as train.py's evaluation).
"""

from __future__ import annotations

import argparse
import csv
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--algo", default="dsac", choices=("dsac", "ddpg"))
    ap.add_argument("--scenario", default="default")
    ap.add_argument("--timesteps", type=int, default=30_000)
    ap.add_argument("--eval-every", type=int, default=3_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "train.py", "--algo", args.algo, "--scenario", args.scenario, "--timesteps", str(args.timesteps),
               "--eval-every", str(args.eval_every), "--seed", str(args.seed), "--out", str(out), "--no-progress"]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with (out / "progress.csv").open() as fh:
            rows = [r for r in csv.DictReader(fh) if r["eval_hypervolume"]]
    steps = [int(r["step"]) for r in rows]
    wall = [float(r["wall_s"]) for r in rows]
    hv = [float(r["eval_hypervolume"]) for r in rows]
    target = 0.95 * hv[-1]
    first = next(i for i, v in enumerate(hv) if v >= target)
    hv_random = random_hypervolume(args)
    gain_target = hv_random + 0.95 * (hv[-1] - hv_random)
    first_gain = next(i for i, v in enumerate(hv) if v >= gain_target)
    print(
        f"{args.algo} on {args.scenario!r}, {args.timesteps:,} env steps, evaluation every {args.eval_every:,}"
    )
    print("step      wall_s  hypervolume")
    for s, w, v in zip(steps, wall, hv, strict=True):
        print(f"{s:<9d} {w:7.1f}  {v:.4f}")
    print(
        f"95 % of the final hypervolume ({hv[-1]:.4f}) first reached at {steps[first]:,} env steps, {wall[first]:.0f} s"
    )
    print(
        f"random policy's hypervolume on the same evaluation: {hv_random:.4f}; 95 % of the final gain "
        f"over it ({gain_target:.4f}) first reached at {steps[first_gain]:,} env steps, {wall[first_gain]:.0f} s"
    )
    print(f"peak resident memory of training: {peak_mb:.0f} MB (target < 4 GB)")


def random_hypervolume(args) -> float:
    """The random baseline under train.py's periodic evaluation (11 preferences, one episode,
    seed 10,000 + seed, the scenario's bounds)."""
    sys.path.insert(0, str(REPO))
    import gymnasium as gym

    import mec_env  # noqa: F401
    from agents.baselines import make_baseline
    from agents.evaluation import episode_returns, front_metrics, return_bounds
    from agents.preferences import evaluation_preferences
    from mec_env import load_scenario

    scenario = load_scenario(args.scenario)
    prefs = evaluation_preferences(len(scenario.objectives.names), 11)
    env = gym.make_vec("mec_env/LLMOffload-v0", num_envs=len(prefs), scenario=scenario)
    # random plans on the discrete env: the continuous env with default knobs is the same world
    low, high, ref = return_bounds(env)
    returns = episode_returns(
        env, make_baseline("random", env, seed=0).act_batch, prefs, 1, 10_000 + args.seed
    )
    env.close()
    return front_metrics(returns, low, high, ref)["hypervolume"]


if __name__ == "__main__":
    main()
