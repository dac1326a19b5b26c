"""GMORL side by side: one Discrete-SAC policy against the baselines on GMORLOffload-v0, E = 6.

    python benchmarks/gmorl_reproduction.py --checkpoint runs/gmorl-dsac [--episodes 10]

Evaluates the trained policy (a ``train.py --env gmorl`` run directory) and the random,
round-robin, all-cloud and least-loaded baselines over 101 evenly spaced preferences, E = 6,
4 GHz cloud, 2 GHz edges (the paper's evaluation setting), and prints each method's
hypervolume with the paper's reference point: the worst delay and the worst energy over all
compared fronts (REFERENCE_NUMBERS sec. 5), and the ratio to random (the paper: GMORL 64.1,
random 29.0, 2.21x).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.evaluation import episode_returns  # noqa: E402
from agents.preferences import evaluation_preferences  # noqa: E402
from mec_env import pareto  # noqa: E402

BASELINES = ("random", "round-robin", "all-cloud", "least-loaded")


def make_env(num_envs: int):
    import gymnasium as gym

    import mec_env  # noqa: F401

    return gym.make_vec(
        "mec_env/GMORLOffload-v0", num_envs=num_envs, num_edges=6, cloud_ghz=4.0, edge_ghz=2.0
    )


def load_agent(run: Path):
    import torch

    from agents.dsac import DiscreteSAC, DSACConfig

    env = make_env(1)
    agent = DiscreteSAC(env, DSACConfig(), seed=0)
    agent.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["agent"])
    steps = torch.load(run / "checkpoint.pt", weights_only=False)["step"]
    return agent, steps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, help="a train.py --env gmorl run directory")
    ap.add_argument(
        "--episodes", type=int, default=10, help="episodes per preference (the paper: 1000)"
    )
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args(argv)
    from agents.baselines import make_baseline

    prefs = evaluation_preferences(2, 101)
    agent, steps = load_agent(Path(args.checkpoint))
    env = make_env(len(prefs))
    fronts: dict[str, np.ndarray] = {}
    fronts["Discrete-SAC (ours)"] = episode_returns(
        env,
        lambda obs, info, w: agent.act(obs, info.get("action_mask"), w, deterministic=True),
        prefs,
        args.episodes,
        args.seed,
    )
    for name in BASELINES:
        baseline = make_baseline(name, env, seed=args.seed)
        fronts[name] = episode_returns(env, baseline.act_batch, prefs, args.episodes, args.seed)
    # the paper's reference point: the worst delay and the worst energy over all fronts
    everything = np.concatenate(list(fronts.values()))
    ref = everything.min(axis=0)
    print(
        f"GMORLOffload-v0, E = 6, 101 preferences x {args.episodes} episodes; policy trained for {steps:,} env steps"
    )
    print(f"reference point (worst delay reward, worst energy reward): {ref}")
    hv = {name: pareto.hypervolume(pareto.pareto_front(f), ref) for name, f in fronts.items()}
    base = hv["random"]
    print(f"{'method':<24}{'hypervolume':>14}{'x random':>10}")
    for name, value in hv.items():
        print(f"{name:<24}{value:14.4g}{value / base:10.2f}")
    print("paper (E = 6): GMORL 64.1, per-preference SAC 64.3, random 29.0 -> 2.21x")


if __name__ == "__main__":
    main()
