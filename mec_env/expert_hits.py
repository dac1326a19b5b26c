"""Steady-state expert-cache hit rates, measured on the seeded routing generator.

The simulator charges an MoE request ``top_k * (1 - h)`` expert misses per layer and token, with
``h`` the LRU hit rate of a cache holding ``capacity`` experts per layer. ``h`` is measured once per
(routing parameters, capacity) on a long stream of :class:`mec_env.routing.RoutingGenerator` with a
fixed seed, so the figure is a property of the model preset, not of an episode.
"""

from __future__ import annotations

import functools

from mec_env.routing import RoutingParams, lru_hit_rate_table

HIT_RATE_TOKENS = 1024  # stream length per measurement
HIT_RATE_SEED = 20250911  # fixed: a preset's hit rate must not depend on the episode seed


def routing_params(model) -> RoutingParams:
    """The routing generator's parameters for a MoE :class:`mec_env.models.ModelSpec`."""
    return RoutingParams(
        num_layers=model.num_layers,
        num_experts=model.num_experts,
        top_k=model.top_k,
        p_stay=model.routing_p_stay,
        zipf_s=model.routing_zipf_s,
        num_topics=model.routing_num_topics,
        topic_switch_prob=model.routing_topic_switch_prob,
    )


@functools.lru_cache(maxsize=1024)
def _hit_rate(params: RoutingParams, capacity: int) -> float:
    if capacity >= params.num_experts:
        return 1.0
    if capacity <= 0:
        return 0.0
    rho = capacity / params.top_k
    return float(
        lru_hit_rate_table(params, [rho], num_tokens=HIT_RATE_TOKENS, seed=HIT_RATE_SEED)[0]
    )


def steady_state_hit_rate(model, capacity: int) -> float:
    """LRU hit rate of ``model``'s routing with ``capacity`` experts cached per layer."""
    return _hit_rate(routing_params(model), int(capacity))
