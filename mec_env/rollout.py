"""Roll out a simple policy on a scenario and print its per-objective episode returns.

    python -m mec_env.rollout [--scenario default] [--policy random|least-loaded|local-first]
                              [--episodes 5] [--seed 0] [--render]

Policies (no learning; the agents package has the full baseline set):
* ``random``: a uniformly random open choice for each part of the plan;
* ``least-loaded``: the open server with the fewest running requests, whole model there, the
  fastest open KV tier, LRU experts when open;
* ``local-first``: run locally when the device can, else as ``least-loaded``.

Bad arguments or an invalid scenario exit with status 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mec_env.cli import OneLineArgumentParser, fail
from mec_env.envs.llm_offload import LLMOffloadEnv
from mec_env.masks import MaskSampler

POLICIES = ("random", "least-loaded", "local-first")


def _first_open(mask: np.ndarray, preferred: int = 0) -> int:
    return preferred if mask[preferred] else int(np.argmax(mask))


def heuristic_action(env: LLMOffloadEnv, local_first: bool) -> np.ndarray:
    """The ``least-loaded`` / ``local-first`` plan for the env's current request."""
    core = env.core
    target_mask = core.part_mask(0)[0]
    if local_first and target_mask[0]:
        g = 0
    else:
        servers = np.flatnonzero(target_mask[1:]) + 1
        g = int(servers[np.argmin(core.busy[0, servers - 1])]) if servers.size else 0
    split = 0 if core.ok_st[0, g, 0].any() else int(np.argmax(core.ok_st[0, g].any(axis=1)))
    tier = int(np.argmax(core.ok_st[0, g, split]))
    policy = _first_open(core.ok_p[0, g], preferred=1)
    return np.array([g, split, tier, policy], dtype=np.int64)


def rollout(scenario, policy: str, episodes: int, seed: int, render: bool = False) -> np.ndarray:
    """(episodes, reward_dim) episode returns of ``policy``."""
    env = LLMOffloadEnv(scenario, render_mode="ansi" if render else None)
    rng = np.random.default_rng(seed)
    sample = MaskSampler(env.action_space.nvec)
    returns = np.zeros((episodes, env.reward_dim))
    for ep in range(episodes):
        _, info = env.reset(seed=seed + ep)
        done = False
        while not done:
            if policy == "random":
                action = sample(info["action_mask"], rng)
            else:
                action = heuristic_action(env, local_first=policy == "local-first")
            _, reward, terminated, truncated, info = env.step(action)
            returns[ep] += reward
            done = terminated or truncated
            if render:
                print(env.render())
    return returns


def main(argv: list[str] | None = None) -> int:
    ap = OneLineArgumentParser(
        prog="python -m mec_env.rollout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--scenario", default="default", help="preset name or YAML path (default: %(default)s)"
    )
    ap.add_argument(
        "--policy", default="least-loaded", choices=POLICIES, help="default: %(default)s"
    )
    ap.add_argument(
        "--episodes", type=int, default=5, help="episodes to run (default: %(default)s)"
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="seed of the first episode (default: %(default)s)"
    )
    ap.add_argument("--render", action="store_true", help="print every step (ansi render)")
    args = ap.parse_args(argv)
    if args.episodes < 1:
        fail(f"--episodes must be >= 1, got {args.episodes}")
    try:
        env = LLMOffloadEnv(args.scenario)
    except ValueError as err:
        fail(f"--scenario: {err}")
    names, units = env.objective_names, env.objective_units
    returns = rollout(env.scenario, args.policy, args.episodes, args.seed, args.render)
    print(
        f"scenario {env.scenario.name!r}, policy {args.policy!r}, {args.episodes} episodes of {env.scenario.episode_requests} requests"
    )
    print(
        "episode  " + "  ".join(f"{n} ({u})".rjust(18) for n, u in zip(names, units, strict=True))
    )
    for ep, row in enumerate(returns):
        print(f"{ep:7d}  " + "  ".join(f"{v:18.4g}" for v in row))
    print("   mean  " + "  ".join(f"{v:18.4g}" for v in returns.mean(axis=0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
