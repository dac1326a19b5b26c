"""The network: a networkx graph of devices, access points, edge servers and the cloud.

Devices attach to access points (device ``i`` to AP ``i mod num_access_points``) over a fading
wireless hop; APs reach edge servers over the edge backhaul and the cloud over the WAN. A transfer
pays the bottleneck bandwidth of its path and the sum of the path's latencies. Wired paths are
resolved once per scenario (:func:`wired_paths`); the wireless rate is drawn per request
(:func:`sample_channel_gain`, :func:`wireless_rate_bps`) with the Shannon formula under Rayleigh
fading, log-normal shadowing and distance path loss (GMORL's channel, RN sec. 5).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from mec_env.cost_model import shannon_rate_bps

__all__ = [
    "build_graph",
    "wired_paths",
    "sample_distances_m",
    "sample_channel_gain",
    "wireless_rate_bps",
    "noise_power_w",
]


def build_graph(scenario) -> nx.Graph:
    """Nodes ``dev{i}``, ``ap{a}``, ``srv{j}``; edges carry ``gbps`` (None: wireless) and ``latency_s``."""
    net = scenario.network
    g = nx.Graph()
    for a in range(net.num_access_points):
        g.add_node(f"ap{a}", kind="ap")
    for i, dev in enumerate(scenario.devices):
        g.add_node(f"dev{i}", kind="device", spec=dev.name)
        g.add_edge(
            f"dev{i}", f"ap{i % net.num_access_points}", gbps=None, latency_s=net.wireless_latency_s
        )
    for j, server in enumerate(scenario.servers):
        g.add_node(f"srv{j}", kind=server.tier, spec=server.name)
        cloud = server.tier == "cloud"
        for a in range(net.num_access_points):
            g.add_edge(
                f"ap{a}",
                f"srv{j}",
                gbps=net.cloud_link_gbps if cloud else net.edge_link_gbps,
                latency_s=net.cloud_link_latency_s if cloud else net.edge_link_latency_s,
            )
    return g


def wired_paths(graph: nx.Graph, scenario) -> tuple[np.ndarray, np.ndarray]:
    """Per (device, server): the wired bottleneck (GB/s) and the one-way latency of the path (s),
    wireless hop's latency included; the shortest-latency path is taken."""
    nd, ns = len(scenario.devices), len(scenario.servers)
    gbps = np.full((nd, ns), np.inf)
    latency = np.zeros((nd, ns))
    for i in range(nd):
        lengths, paths = nx.single_source_dijkstra(graph, f"dev{i}", weight="latency_s")
        for j in range(ns):
            path = paths[f"srv{j}"]
            hops = [graph.edges[u, v]["gbps"] for u, v in zip(path[:-1], path[1:], strict=True)]
            wired = [h for h in hops if h is not None]
            gbps[i, j] = min(wired) if wired else np.inf
            latency[i, j] = lengths[f"srv{j}"]
    return gbps, latency


def noise_power_w(network) -> float:
    """Thermal noise over the channel: N0 (dBm/Hz) * W, in W."""
    return 10.0 ** ((network.noise_dbm_per_hz - 30.0) / 10.0) * network.wireless_bandwidth_hz


def sample_distances_m(rng: np.random.Generator, network, size) -> np.ndarray:
    """Device-AP distances, uniform in [distance_min_m, distance_max_m]."""
    return rng.uniform(network.distance_min_m, network.distance_max_m, size)


def sample_channel_gain(
    rng: np.random.Generator, network, distance_m: np.ndarray, shadowing_db: np.ndarray
) -> np.ndarray:
    """Linear channel power gain |h|^2 * 10^(-(PL(d) + shadowing)/10); PL = a + b log10(d_km)."""
    path_loss_db = network.path_loss_at_1km_db + network.path_loss_slope_db * np.log10(
        distance_m / 1000.0
    )
    gain = 10.0 ** (-(path_loss_db + shadowing_db) / 10.0)
    if network.fading == "rayleigh":
        gain = gain * rng.exponential(1.0, np.shape(distance_m))
    return gain


def wireless_rate_bps(network, tx_power_w, gain) -> np.ndarray:
    """Shannon rate of the wireless hop, floored at ``min_rate_bps`` (link adaptation's lowest
    modulation keeps a deep fade from stalling a transfer forever)."""
    rate = shannon_rate_bps(network.wireless_bandwidth_hz, tx_power_w, gain, noise_power_w(network))
    return np.maximum(rate, network.min_rate_bps)
