"""Fronts of a trained Discrete-SAC policy and the baselines on an LLMOffload scenario.

    python benchmarks/policy_fronts.py --checkpoint runs/dsac-default-s0 [--preferences 11] [--episodes 5]

Evaluates the deterministic policy of a ``train.py --algo dsac`` run and the heuristic
baselines over evenly spaced preferences (the same seeds for every method) and prints each
method's normalised hypervolume and expected utility (the scenario's published bounds and
reference point) and its mean return per objective (raw units). ``evaluate.py`` will
supersede this with the full protocol (101 preferences, the oracle, plots).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASELINES = (
    "greedy",
    "random",
    "all-local",
    "all-offload",
    "round-robin",
    "flexgen",
    "instinfer",
    "lru-experts",
)


def main(argv=None) -> None:
    import gymnasium as gym
    import torch

    import mec_env  # noqa: F401
    from agents.baselines import make_baseline
    from agents.dsac import DiscreteSAC, DSACConfig
    from agents.evaluation import episode_returns, front_metrics, return_bounds
    from agents.preferences import evaluation_preferences
    from mec_env import load_scenario

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, help="a train.py --algo dsac run directory")
    ap.add_argument("--preferences", type=int, default=11)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=777)
    args = ap.parse_args(argv)
    run = Path(args.checkpoint)
    scenario = load_scenario(run / "scenario.yaml")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    prefs = evaluation_preferences(len(scenario.objectives.names), args.preferences)
    env = gym.make_vec(
        "mec_env/LLMOffload-v0", num_envs=len(prefs), scenario=scenario, parallel=False
    )
    low, high, ref = return_bounds(env)
    agent = DiscreteSAC(env, DSACConfig(), seed=0)
    agent.load_state_dict(ckpt["agent"])
    results = {
        f"Discrete-SAC ({ckpt['step']:,} steps)": episode_returns(
            env,
            lambda o, i, w: agent.act(o, i["action_mask"], w, deterministic=True),
            prefs,
            args.episodes,
            args.seed,
        )
    }
    for name in BASELINES:
        baseline = make_baseline(name, env, seed=0)
        results[name] = episode_returns(env, baseline.act_batch, prefs, args.episodes, args.seed)
    units = ", ".join(
        f"{n} ({u})"
        for n, u in zip(scenario.objectives.names, env._base.objective_units, strict=True)
    )
    print(
        f"scenario {scenario.name!r}: {len(prefs)} preferences x {args.episodes} episodes; mean return: {units}"
    )
    print(f"{'method':<30}{'hypervolume':>12}{'exp. utility':>14}   mean return")
    for name, returns in results.items():
        m = front_metrics(returns, low, high, ref)
        print(
            f"{name:<30}{m['hypervolume']:12.4f}{m['expected_utility']:14.4f}   {returns.mean(axis=0).round(1)}"
        )


if __name__ == "__main__":
    main()
