"""mec_env: multi-objective Gymnasium environments for LLM/MoE offloading at the edge.

Importing the package registers the environments (Gymnasium 1.x does not load entry points):

* ``mec_env/LLMOffload-v0``: the main environment (MultiDiscrete plan, vector reward, masks);
  its natively batched vector env via ``gym.make_vec("mec_env/LLMOffload-v0", num_envs=...)``.
* ``mec_env/LLMOffloadContinuous-v0``: the same dynamics with a Box action (and its vector env).
* ``mec_env/GMORLOffload-v0``: the GMORL paper's world (cloud + E edges).

Each id also resolves as ``"mec_env:mec_env/<Name>-v0"`` without an explicit import.
"""

from __future__ import annotations

import gymnasium as gym

from mec_env.scenario import Scenario, list_scenarios, load_scenario

__all__ = ["Scenario", "load_scenario", "list_scenarios", "ENV_IDS"]
__version__ = "0.1.0"

ENV_IDS = ("mec_env/LLMOffload-v0", "mec_env/LLMOffloadContinuous-v0", "mec_env/GMORLOffload-v0")


def _register() -> None:
    specs = {
        "mec_env/LLMOffload-v0": dict(
            entry_point="mec_env.envs.llm_offload:LLMOffloadEnv",
            vector_entry_point="mec_env.envs.llm_offload:LLMOffloadVectorEnv",
        ),
        "mec_env/LLMOffloadContinuous-v0": dict(
            entry_point="mec_env.envs.llm_offload:LLMOffloadContinuousEnv",
            vector_entry_point="mec_env.envs.llm_offload:LLMOffloadContinuousVectorEnv",
        ),
        "mec_env/GMORLOffload-v0": dict(
            entry_point="mec_env.envs.gmorl:GMORLOffloadEnv",
            vector_entry_point="mec_env.envs.gmorl:GMORLVectorEnv",
        ),
    }
    for env_id, kwargs in specs.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, **kwargs)


_register()
