"""Environment throughput: mec_env/LLMOffload-v0 against Gymnasium's CartPole-v1, in one run.

Prints steps/s of (1) CartPole-v1 through gym.make with random actions, (2) LLMOffload-v0 through
gym.make with random *valid* actions (uniform over the open choices of each part of the mask),
(3) the natively batched vector env with 256 envs (total steps/s), stepped on one thread and on
all of numba's threads, the ratios to CartPole, and (4) the peak resident memory of a fresh
process that builds and steps the 256-env vector env.

    python benchmarks/env_throughput.py [--seconds 1.0] [--repeats 5] [--num-envs 256]

Targets (issue #2): single env >= 0.5x CartPole; vector env >= 5x CartPole's total, < 300 MB.
The machines are shared and noisy, so CartPole and each candidate run alternately, ``--repeats``
rounds of about ``--seconds`` each, and each figure is the best round; a ratio always compares
figures measured in the same process, interleaved.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import gymnasium as gym
import numpy as np
import mec_env
from mec_env.masks import MaskSampler

def timed(step, seconds):
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(200):
            step()
        n += 200
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt

def cartpole():
    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    env.action_space.seed(0)
    def step():
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return step

def single():
    env = gym.make("mec_env/LLMOffload-v0")
    rng = np.random.default_rng(0)
    sample = MaskSampler(env.action_space.nvec)
    state = {"info": env.reset(seed=0)[1]}
    def step():
        _, _, terminated, truncated, info = env.step(sample(state["info"]["action_mask"], rng))
        if terminated or truncated:
            _, info = env.reset()
        state["info"] = info
    return step

def vector(num_envs, parallel):
    env = gym.make_vec("mec_env/LLMOffload-v0", num_envs=num_envs, parallel=parallel)
    rng = np.random.default_rng(0)
    sample = MaskSampler(env.single_action_space.nvec)
    state = {"info": env.reset(seed=0)[1]}
    def step():
        state["info"] = env.step(sample(state["info"]["action_mask"], rng))[4]
    return step

mode, num_envs, seconds, repeats = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
scale = 1 if mode == "single" else num_envs
candidate = single() if mode == "single" else vector(num_envs, parallel=mode == "vector-threads")
reference = cartpole()
timed(reference, 0.2), timed(candidate, 0.2)  # warm up
best_cp, best = 0.0, 0.0
for _ in range(repeats):
    best_cp = max(best_cp, timed(reference, seconds))
    best = max(best, scale * timed(candidate, seconds / (1 if mode == "single" else 4)))
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import numba
print(json.dumps({"cartpole": best_cp, "steps_per_s": best, "peak_rss_mb": rss_mb, "threads": numba.get_num_threads()}))
"""


def run_child(mode: str, num_envs: int, seconds: float, repeats: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(num_envs), str(seconds), str(repeats)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one timed round")
    ap.add_argument("--repeats", type=int, default=5, help="rounds per figure (best is kept)")
    ap.add_argument("--num-envs", type=int, default=256)
    args = ap.parse_args(argv)
    single = run_child("single", 1, args.seconds, args.repeats)
    serial = run_child("vector-serial", args.num_envs, args.seconds, args.repeats)
    vec = run_child("vector-threads", args.num_envs, args.seconds, args.repeats)
    print(f"CartPole-v1 (gym.make, random actions)           {single['cartpole']:12,.0f} steps/s")
    print(
        f"LLMOffload-v0 (gym.make, random valid actions)   {single['steps_per_s']:12,.0f} steps/s"
        f"  = {single['steps_per_s'] / single['cartpole']:5.2f}x CartPole (target >= 0.5x)"
    )
    for name, r in (
        (f"{args.num_envs} envs, one thread", serial),
        (f"{args.num_envs} envs, {vec['threads']} threads", vec),
    ):
        print(
            f"LLMOffload vector env, {name:<18} {r['steps_per_s']:12,.0f} steps/s"
            f"  = {r['steps_per_s'] / r['cartpole']:5.2f}x CartPole ({r['cartpole']:,.0f} in that process; target >= 5x)"
        )
    rss = max(serial["peak_rss_mb"], vec["peak_rss_mb"])
    print(
        f"peak resident memory of a {args.num_envs}-env vector env process: {rss:.0f} MB (target < 300 MB)"
    )


if __name__ == "__main__":
    main()
