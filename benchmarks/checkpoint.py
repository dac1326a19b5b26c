"""Checkpoint cost of a full replay buffer: the buffer's state as tensors against numpy arrays.

``train.py`` writes a checkpoint every ``--checkpoint-every`` steps (25,000 by default), each
holding the whole replay buffer. A GMORL run (``--env gmorl --num-envs 64 --gmorl-edges 6
--gmorl-cost-features``, 100,000 transitions of 781 floats, twice for the next observation)
writes ~65 of them. ``torch.save`` writes a tensor's storage as it is but pickles a numpy array
through a bytes copy, so this script times, in one process and interleaved, ``torch.save`` of
the real agent's :meth:`state_dict` (the buffer as tensors) and of the same state with the
buffer converted back to numpy arrays (how ``train.py`` saved it before), ``state_dict()``
included, and prints the best round of each, its page faults, the file sizes and the ratio.

    python benchmarks/checkpoint.py [--repeats 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def full_gmorl_agent():
    import gymnasium as gym

    import mec_env  # noqa: F401  (registers the environments)
    from agents.dsac import DiscreteSAC, DSACConfig

    env = gym.make_vec("mec_env/GMORLOffload-v0", num_envs=64, num_edges=6, cost_features=True)
    agent = DiscreteSAC(env, DSACConfig(relative_costs=True), seed=0)
    buf, rng = agent.buffer, np.random.default_rng(0)
    buf.obs[:] = rng.random(buf.obs.shape, np.float32)
    buf.next_obs[:] = buf.obs
    buf.size = buf.capacity
    env.close()
    return agent


def timed_checkpoint(agent, as_numpy: bool, path: Path) -> tuple[float, int]:
    """Seconds and page faults of ``state_dict()`` + ``torch.save``, as ``train.py`` does."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    state = agent.state_dict()
    if as_numpy:  # the buffer as numpy arrays, as train.py wrote it before
        state["buffer"] = {
            k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state["buffer"].items()
        }
    torch.save(state, path)
    del state
    dt = time.perf_counter() - t0
    return dt, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (a temp dir)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    agent = full_gmorl_agent()
    obs_mb = 2 * agent.buffer.obs.nbytes / 2**20
    print(f"buffer: {len(agent.buffer)} transitions, observations {obs_mb:.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        best: dict[str, tuple[float, int, int]] = {}
        for _ in range(args.repeats):
            for name in ("tensors", "numpy"):
                path = folder / f"{name}.pt"
                dt, faults = timed_checkpoint(agent, name == "numpy", path)
                if name not in best or dt < best[name][0]:
                    best[name] = (dt, faults, os.path.getsize(path))
    for name, (dt, faults, size) in best.items():
        print(
            f"buffer as {name:8s}: state_dict + torch.save {dt:6.2f} s, {faults:9d} page faults, {size / 2**20:5.0f} MB"
        )
    ratio = best["numpy"][0] / best["tensors"][0]
    print(f"numpy / tensors: {ratio:.1f}x the time of a checkpoint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
