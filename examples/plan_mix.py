"""Where a trained policy's plans go, beside greedy myopic's, preference by preference.

    python examples/plan_mix.py runs/dsac-rush-cf-s1 --scenario examples/rush-hour.yaml \
        [--preferences 1,0 0.9,0.1 0.5,0.5] [--episodes 5] [--seed 1000]

For each preference and method (the run, then greedy), over the same episodes (seeds
``seed .. seed + episodes - 1``, as ``evaluate.py``): requests rejected per episode, the
latency (s) of the requests not rejected and the energy (J) per episode, and how many requests
per episode ran on the device and on each server. It tells a policy that loses to greedy by
foresight (more rejections) from one that loses by precision (same rejections, costlier plans).
Bad arguments exit with status 2 and one line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    from mec_env.cli import OneLineArgumentParser  # bad arguments: exit 2, one line

    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a train.py --out directory (main env)")
    ap.add_argument("--scenario", default=None, help="preset or YAML (default: the run's own)")
    ap.add_argument(
        "--preferences",
        nargs="+",
        default=None,
        metavar="W",
        help="preferences, each comma-separated weights, one per objective (default: 1,0 "
        "0.9,0.1 0.7,0.3 0.5,0.5 0.3,0.7 0,1 for two objectives, else equal weights)",
    )
    ap.add_argument("--episodes", type=int, default=5, help="episodes per preference (default: 5)")
    ap.add_argument("--seed", type=int, default=1000, help="seed of the first episode")
    return ap.parse_args(argv)


def preferences(texts, dim: int) -> np.ndarray:
    from evaluate import fail

    if texts is None:
        if dim == 2:
            return np.array([[w, 1.0 - w] for w in (1.0, 0.9, 0.7, 0.5, 0.3, 0.0)], np.float32)
        return np.full((1, dim), 1.0 / dim, np.float32)
    out = []
    for text in texts:
        try:
            w = np.array([float(x) for x in text.split(",")], np.float32)
        except ValueError:
            fail(f"--preferences: {text!r} is not comma-separated numbers")
        if w.shape != (dim,) or (w < 0).any() or w.sum() <= 0:
            fail(f"--preferences: {text!r} must be {dim} non-negative weights, not all 0")
        out.append(w / w.sum())
    return np.stack(out)


def plan_mix(env, policy, prefs: np.ndarray, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """Per preference, per episode means: ``rejected``, ``latency_s`` (requests not
    rejected), ``energy_j`` and ``targets`` (requests per target, device first)."""
    P, G = len(prefs), int(env.unwrapped.core.nvec[0])  # targets (continuous env too)
    out = {k: np.zeros(P) for k in ("rejected", "latency_s", "energy_j")}
    out["targets"] = np.zeros((P, G))
    for ep in range(episodes):
        obs, info = env.reset(seed=[seed + ep] * P)
        done = np.zeros(P, bool)
        while not done.all():
            obs, _, terminated, truncated, info = env.step(policy(obs, info, prefs))
            live = ~done
            rejected = info["rejected"]
            out["rejected"] += live & rejected
            out["latency_s"] += np.where(live & ~rejected, info["costs"][:, 0], 0.0)
            out["energy_j"] += np.where(live, info["costs"][:, 1], 0.0)
            served = live & ~rejected
            np.add.at(out["targets"], (np.flatnonzero(served), info["plan"][served, 0]), 1.0)
            done |= terminated | truncated
    return {k: v / episodes for k, v in out.items()}


def main(argv=None) -> None:
    from agents.baselines import make_baseline
    from evaluate import EnvSpec, fail, llm_scenario, load_run, make_policy

    args = parse_args(argv)
    if args.episodes < 1:
        fail(f"--episodes must be >= 1, got {args.episodes}")
    run = load_run(args.run)
    if run.env != "llm-offload":
        fail(f"run {args.run!r} is a {run.env} run; plan_mix reads the main env's plans")
    source = args.scenario if args.scenario is not None else run.scenario
    spec = EnvSpec("llm-offload", llm_scenario(source, None, "--scenario"), label="the scenario")
    prefs = preferences(args.preferences, len(spec.scenario.objectives.names))
    env = spec.make(run.algo, len(prefs), run)
    rows = {run.label: plan_mix(env, make_policy(run, spec, env), prefs, args.episodes, args.seed)}
    env.close()
    env = spec.make("dsac", len(prefs))
    greedy = make_baseline("greedy", env)
    rows["greedy"] = plan_mix(
        env, lambda o, i, w: greedy.act_batch(o, i, w), prefs, args.episodes, args.seed
    )
    servers = [s.name for s in spec.scenario.servers]
    print(
        f"per episode, mean of {args.episodes} ({spec.scenario.name}); latency: requests not rejected"
    )
    print(
        "| preference | method | rejected | latency s | energy J | device | "
        + " | ".join(servers)
        + " |"
    )
    print("|---" * (6 + len(servers)) + "|")
    for j, w in enumerate(prefs):
        for name, r in rows.items():
            counts = " | ".join(f"{x:.1f}" for x in r["targets"][j, : 1 + len(servers)])
            print(
                f"| {','.join(f'{x:g}' for x in w)} | {name} | {r['rejected'][j]:.1f} | "
                f"{r['latency_s'][j]:.0f} | {r['energy_j'][j]:.0f} | {counts} |"
            )


if __name__ == "__main__":
    main()
