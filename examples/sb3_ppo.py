"""Stable-Baselines3's PPO on the scalarised main environment, through gym.make.

    python examples/sb3_ppo.py [--timesteps 20000] [--weights 0.5 0.5]

PPO is single-objective: ``LinearScalarization`` turns the vector reward into
``w . (r / scale)`` (a float; the vector stays in ``info["vector_reward"]``), with ``scale`` the
objectives' typical per-request magnitudes so that seconds and joules weigh comparably.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_env(weights):
    import gymnasium as gym

    import mec_env  # noqa: F401
    from agents.common import objective_scale
    from mec_env.wrappers import LinearScalarization

    env = gym.make("mec_env/LLMOffload-v0", scenario="default")
    w = [wi / si for wi, si in zip(weights, objective_scale(env), strict=True)]
    return LinearScalarization(env, weights=w)


def main(argv=None) -> None:
    from stable_baselines3 import PPO

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timesteps", type=int, default=20_000)
    ap.add_argument("--weights", type=float, nargs=2, default=(0.5, 0.5))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    env = make_env(args.weights)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, seed=args.seed, verbose=0)
    model.learn(total_timesteps=args.timesteps)
    obs, _ = env.reset(seed=123)
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    print(f"PPO, {args.timesteps} steps: scalarised return of one evaluation episode = {total:.3f}")


if __name__ == "__main__":
    main()
