"""sb3-contrib's MaskablePPO on the scalarised main environment, using ``action_masks()``.

    pip install sb3-contrib
    python examples/maskable_ppo.py [--timesteps 20000] [--weights 0.5 0.5]

MaskablePPO reads the env's ``action_masks()`` (the per-part masks of the MultiDiscrete plan
concatenated, the format it expects), so it never samples a masked part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.sb3_ppo import make_env  # noqa: E402


def main(argv=None) -> None:
    from sb3_contrib import MaskablePPO

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timesteps", type=int, default=20_000)
    ap.add_argument("--weights", type=float, nargs=2, default=(0.5, 0.5))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    env = make_env(args.weights)
    model = MaskablePPO("MlpPolicy", env, n_steps=256, batch_size=64, seed=args.seed, verbose=0)
    model.learn(total_timesteps=args.timesteps)
    obs, _ = env.reset(seed=123)
    total, done, fallbacks = 0.0, False, 0
    while not done:
        action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        fallbacks += int(info["fallback"][:2].any())
        done = terminated or truncated
    print(
        f"MaskablePPO, {args.timesteps} steps: scalarised return {total:.3f}, target/split fallbacks {fallbacks}"
    )


if __name__ == "__main__":
    main()
