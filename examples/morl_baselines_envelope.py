"""morl-baselines' Envelope Q-learning on the vector-reward GMORL env, through gym.make.

    pip install morl-baselines            # optional, heavy (wandb, cvxpy, ...): not a dependency
    python examples/morl_baselines_envelope.py [--timesteps 5000] [--edges 3]

Envelope (Yang et al. 2019) learns one preference-conditioned Q-network over the vector
reward; ``mec_env/GMORLOffload-v0`` follows MO-Gymnasium's conventions (float32 reward vector,
``reward_space``), so it plugs in with only its (feature x server) observation flattened. The agent's "eval" then acts greedily for a few
preferences and the script prints each one's mean return per objective (delay and energy
rewards, GMORL's scaling) next to the random policy's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def episode_return(env, act, seed: int) -> np.ndarray:
    obs, info = env.reset(seed=seed)
    total, done = np.zeros(2), False
    while not done:
        obs, r, terminated, truncated, info = env.step(act(obs, info))
        total += r
        done = terminated or truncated
    return total


def main(argv=None) -> None:
    import gymnasium as gym
    from morl_baselines.multi_policy.envelope.envelope import Envelope

    import mec_env  # noqa: F401

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timesteps", type=int, default=5000)
    ap.add_argument("--edges", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=3)
    args = ap.parse_args(argv)

    def make():  # 2-D observations (feature x server) look like images to Envelope: flatten
        return gym.wrappers.FlattenObservation(
            gym.make("mec_env/GMORLOffload-v0", num_edges=args.edges)
        )

    env = make()
    agent = Envelope(
        env,
        learning_starts=200,
        batch_size=64,
        net_arch=[128, 128],
        buffer_size=50_000,
        target_net_update_freq=200,
        initial_epsilon=1.0,
        final_epsilon=0.05,
        epsilon_decay_steps=max(1, args.timesteps // 2),
        log=False,  # no wandb
        seed=args.seed,
        device="cpu",
    )
    agent.train(
        total_timesteps=args.timesteps,
        eval_env=make(),
        ref_point=np.array([-100.0, -100.0]),
        eval_freq=10 * args.timesteps,  # no periodic evaluation (it logs to wandb)
    )
    evaluation = make()
    rng = np.random.default_rng(args.seed)
    print(
        f"GMORLOffload-v0, E = {args.edges}, Envelope after {args.timesteps} steps; mean return over {args.episodes} episodes (delay, energy):"
    )
    for w in ([1.0, 0.0], [0.5, 0.5], [0.0, 1.0]):
        wt = np.array(w, dtype=np.float32)
        ret = np.mean(
            [
                episode_return(evaluation, lambda o, i, wt=wt: agent.eval(o, wt), 100 + e)
                for e in range(args.episodes)
            ],
            axis=0,
        )  # noqa: B023
        print(f"  Envelope w = {w}: {ret.round(2)}")

    def random_act(obs, info):
        return int(rng.choice(np.flatnonzero(info["action_mask"])))

    ret = np.mean(
        [episode_return(evaluation, random_act, 100 + e) for e in range(args.episodes)], axis=0
    )
    print(f"  random: {ret.round(2)}")


if __name__ == "__main__":
    main()
