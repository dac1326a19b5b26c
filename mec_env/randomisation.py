"""Domain randomisation across scenarios: randomised variants of a scenario, and a vector env
whose sub-environments play several scenarios at once.

:func:`randomised_scenarios` draws ``k`` variants of a scenario, each hardware and network
rate (server FLOP/s and memory bandwidth, GPU-host link, SSD and CSD bandwidths, device compute
and memory bandwidth, wireless bandwidth, wired links) and the arrival rate scaled by its own
factor ~ U(1 - spread, 1 + spread) (GMORL randomises server frequencies the same way, RN sec.
5). Structure (devices, servers, models, bounds) is kept, so every variant has the same
observation and action spaces and one policy can act in all of them.

:class:`MixedScenarioVectorEnv` runs ``num_envs`` sub-environments split into contiguous
blocks, block j playing ``scenarios[j]`` (one batched core per scenario); it is what
``train.py --domain-randomisation K`` trains on.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from mec_env.scenario import Scenario, load_scenario

__all__ = ["MixedScenarioVectorEnv", "randomised_scenarios"]


def _scaled(spec, rng: np.random.Generator, spread: float, fields: tuple[str, ...]):
    return spec.replace(
        **{f: getattr(spec, f) * rng.uniform(1 - spread, 1 + spread) for f in fields}
    )


def randomised_scenarios(scenario, k: int, seed: int = 0, spread: float = 0.25) -> list[Scenario]:
    """``k`` variants of ``scenario`` (a Scenario, preset name or YAML path), see the module.

    Raises:
        ValueError: ``k`` < 1 or ``spread`` outside [0, 1).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not (isinstance(spread, (int, float)) and 0.0 <= spread < 1.0):
        raise ValueError(f"spread must be in [0, 1), got {spread!r}")
    base = load_scenario(scenario)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        servers = []
        for s in base.servers:
            changes: dict[str, Any] = {
                "gpu": _scaled(s.gpu, rng, spread, ("flops", "hbm_gbps")),
                "host": _scaled(s.host, rng, spread, ("dram_gbps", "cpu_flops")),
                "gpu_host_gbps": s.gpu_host_gbps * rng.uniform(1 - spread, 1 + spread),
            }
            if s.ssd is not None:
                changes["ssd"] = _scaled(s.ssd, rng, spread, ("read_gbps", "write_gbps"))
            if s.csd is not None:
                changes["csd"] = _scaled(s.csd, rng, spread, ("internal_gbps", "external_gbps"))
            servers.append(s.replace(**changes))
        devices = [
            _scaled(d, rng, spread, ("compute_flops", "mem_bandwidth_gbps")) for d in base.devices
        ]
        network = _scaled(
            base.network,
            rng,
            spread,
            ("wireless_bandwidth_hz", "edge_link_gbps", "cloud_link_gbps"),
        )
        workload = _scaled(base.workload, rng, spread, ("arrival_rate_hz",))
        out.append(
            base.replace(
                name=f"{base.name}-dr{i}",
                servers=tuple(servers),
                devices=tuple(devices),
                network=network,
                workload=workload,
            )
        )
    return out


class MixedScenarioVectorEnv(gym.vector.VectorEnv):
    """Sub-environments in contiguous blocks, block j playing ``scenarios[j]`` (module doc).

    Same interface as ``LLMOffloadVectorEnv`` (NEXT_STEP autoreset, ``action_masks()``, info
    arrays concatenated over the blocks); ``scenario`` is the first scenario (reward scale,
    bounds). ``reset(seed=s)`` seeds block j with ``s + j``; a list of seeds is split over
    the blocks. ``continuous`` picks the continuous variant.
    """

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, scenarios, num_envs: int, continuous: bool = False, **kwargs: Any) -> None:
        from mec_env.envs.llm_offload import LLMOffloadContinuousVectorEnv, LLMOffloadVectorEnv

        scenarios = [load_scenario(s) for s in scenarios]
        if not scenarios:
            raise ValueError("scenarios must name at least one scenario, got none")
        if (
            isinstance(num_envs, bool)
            or not isinstance(num_envs, (int, np.integer))
            or num_envs < len(scenarios)
        ):
            raise ValueError(
                f"num_envs must be an integer >= the number of scenarios ({len(scenarios)}), got {num_envs!r}"
            )
        cls = LLMOffloadContinuousVectorEnv if continuous else LLMOffloadVectorEnv
        sizes = [len(range(j, num_envs, len(scenarios))) for j in range(len(scenarios))]
        self.envs = [
            cls(num_envs=n, scenario=s, **kwargs) for s, n in zip(scenarios, sizes, strict=True)
        ]
        first = self.envs[0]
        for s, e in zip(scenarios[1:], self.envs[1:], strict=True):
            for name in ("single_observation_space", "single_action_space"):
                if getattr(e, name) != getattr(first, name):
                    raise ValueError(
                        f"scenario {s.name!r} has {name} {getattr(e, name)}, unlike {scenarios[0].name!r}'s {getattr(first, name)}"
                    )
        self.scenarios = scenarios
        self.scenario = scenarios[0]
        self._base = first._base
        self.core = first.core
        self.num_envs = int(num_envs)
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, self.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.reward_space = first.reward_space
        self.reward_dim = first.reward_dim
        self.objective_names = first.objective_names
        bounds = np.cumsum([0, *sizes])
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        results = []
        for j, (env, sl) in enumerate(zip(self.envs, self._slices, strict=True)):
            if seed is None or isinstance(seed, (int, np.integer)):
                s = None if seed is None else int(seed) + j
            else:
                s = list(seed)[sl]
            results.append(env.reset(seed=s, options=options))
        return np.concatenate([o for o, _ in results]), _concat([i for _, i in results])

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions must have {self.num_envs} rows, got {actions.shape[0]}")
        out = [env.step(actions[sl]) for env, sl in zip(self.envs, self._slices, strict=True)]
        obs, reward, terminated, truncated = (np.concatenate([o[k] for o in out]) for k in range(4))
        return obs, reward, terminated, truncated, _concat([o[4] for o in out])

    def action_masks(self) -> np.ndarray:
        return np.concatenate([e.action_masks() for e in self.envs])

    def close_extras(self, **kwargs: Any) -> None:
        for e in self.envs:
            e.close()


def _concat(infos: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: np.concatenate([i[k] for i in infos]) for k in infos[0]}
