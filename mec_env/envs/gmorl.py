"""GMORL's task-offloading world (arXiv 2509.10474), batched over environments.

One cloud (server 0) and E edge servers receive generic tasks of L bits that need eta cycles per
bit; the agent picks the server for one task per 1 s step and is rewarded with the negated delay
and energy of that choice. All numbers come from ``shared/REFERENCE_NUMBERS.md`` sec. 5 (RN).

Three public classes share one implementation of the dynamics:

- :class:`GMORLBatchedCore` holds the state of N worlds in arrays; ``reset`` draws worlds with
  numpy from the caller's generator, ``step`` runs one compiled (numba) kernel that loops over the
  envs, like :mod:`mec_env._kernels` does for the main environment;
- :class:`GMORLOffloadEnv` is a ``gymnasium.Env`` over a core with N = 1;
- :class:`GMORLVectorEnv` is a ``gymnasium.vector.VectorEnv`` over a core with N = ``num_envs``.

Where RN (the paper's Table 2) and the predecessor code (gracefulning/mec_morl_multipolicy,
``env/MEC_env.py``) disagree, RN is followed except for the channel:

- channel: RN's formula taken literally, ``C = W log2(1 + p |h|^2 / (N0 W))`` with 8 dB log-normal
  shadowing, reaches a cloud 1-2 km away at tens of kbit/s (median ~25 kbit/s, about a third of
  cloud links at the 10 kbit/s floor; edges: median ~10 Mbit/s), which removes the cloud-versus-edge
  trade-off the paper studies. The code computes ``log2(1 + p * g**2 / N0W)`` with
  ``g = |h|^2 PL / N0W`` and a fixed -8 dB shadowing term, giving every link hundreds of Mbit/s
  (median ~400 Mbit/s to the cloud). The published results were produced with the code, so the
  default is ``channel="predecessor"``; ``channel="paper"`` gives RN's formula.
- delay reward: the code leaves the task's own upload time out of r_T (and counts the running tasks
  twice when the upload outlasts all of them); here r_T includes the upload time L / C.
- task size clip: [0.1, 100] Mbit (the code's multi-edge config), not its single-edge 30 Mbit.

Modelling rules chosen here (each also stated in the env card):

- arrivals: the episode's arrival stream (Poisson counts per step, i.i.d. sizes and users in arrival
  order) is drawn at reset; the FIFO queue is the window [dispatched, arrived) of that stream. This
  has the same distribution as drawing online, needs no random numbers in ``step``, and keeps the
  queue in fixed-size arrays. When no task is waiting the agent sees an empty task (size 0, as the
  predecessor code does): any valid action is accepted and both rewards are 0.
- channel: distances, shadowing and Rayleigh fading are drawn per (server, user) at reset and held
  for the episode (block fading, as the predecessor code does); rates are floored at
  ``min_rate_bps`` so that every reward is bounded.
- execution: a task uploads for L / C seconds (uploads do not share bandwidth), then joins its
  server's processor-shared set at the exact instant its upload completes, also mid-step.
- rewards are charged at dispatch: r_E = -alpha_E (p L / C + kappa eta f^2 L) and
  r_T = -alpha_T (own delay + delay added to the tasks running on that server), both delays
  assuming no further arrivals (RN; :func:`mec_env.cost_model.ps_row_own_added`), with the running
  tasks progressing during the upload (:func:`mec_env.cost_model.ps_row_served`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numba import njit

from mec_env.cost_model import ps_row_own_added, ps_row_served, shannon_rate_bps

# --- World constants (RN sec. 5 unless stated) -----------------------------------------------
DT_S = 1.0  # decision interval
EPISODE_STEPS = 100  # T
NUM_USERS = 10  # U
ARRIVAL_RATE_PER_USER_HZ = 0.1  # lambda, Poisson
CYCLES_PER_BIT = 1e3  # eta
KAPPA = 5e-31  # effective switched capacitance: energy = kappa * cycles * f^2
TASK_MBIT_MIN, TASK_MBIT_MAX = 0.1, 100.0  # clip of the exponential task size
BANDWIDTH_HZ = 16.6e6  # W
TX_POWER_W = 0.01  # p = 10 mW
NOISE_DBM_PER_HZ = -174.0
NOISE_W = 10.0 ** ((NOISE_DBM_PER_HZ - 30.0) / 10.0) * BANDWIDTH_HZ  # sigma^2 = N0 W
PATH_LOSS_DB_PER_DECADE, PATH_LOSS_DB_AT_1KM = 35.0, 133.6  # 35 log10(d_km) + 133.6
SHADOWING_STD_DB = 8.0  # log-normal shadowing (the predecessor code: a fixed -8 dB)
CLOUD_DIST_M, EDGE_DIST_M = (1000.0, 2000.0), (50.0, 500.0)
ALPHA_T_PER_S = 0.01  # reward scale of delay (predecessor code: -0.01 * delay)
ALPHA_E_PER_J = 50.0  # reward scale of energy (predecessor code: -50 * energy)
HIST_BINS, HIST_BIN_MBIT = 60, 1.0  # histogram of remaining execution sizes
DEFAULT_MIN_RATE_BPS = 1e4  # rate floor (assumed): a link this slow would drop in practice
MAX_GHZ = 10.0  # largest accepted CPU frequency (bounds the observation)
RANGES = {  # domain randomisation (RN sec. 5): E, cloud GHz, edge GHz
    "train": {"num_edges": (1, 8), "cloud_ghz": (3.5, 4.5), "edge_ghz": (1.75, 2.25)},
    "test": {"num_edges": (1, 10), "cloud_ghz": (3.0, 5.0), "edge_ghz": (1.5, 2.5)},
}

# Observation rows (one column per server); see the env card for meanings and bounds.
FEATURES = (
    "present",
    "is_cloud",
    "task_size",
    "rate",
    "cpu_freq",
    "num_running",
    "num_uploading",
    "num_edges",
    "time",
)
NUM_FEATURES = len(FEATURES) + HIST_BINS
_HIST_ROW = len(FEATURES)
# Optional rows after the histogram (``cost_features=True``; not in the paper): the reward-scaled
# delay and energy that sending the current task to each server would be charged now, i.e.
# -reward of that action (ALPHA_T_PER_S * s, ALPHA_E_PER_J * J; 0 for absent servers and when
# no task waits). The myopic costs greedy minimises, given to the policy as inputs.
COST_FEATURES = ("predicted_delay", "predicted_energy")
_COST_ROW = NUM_FEATURES
_EPS_MBIT = 1e-9  # a task with less remaining work than this has finished
_NOT_RUNNING = -1.0  # finish mark of a task still uploading (virtual time is >= 0)

# Columns of the packed state arrays (numba pays per kernel argument).
_MU, _EXEC, _V, _FMIN = range(4)  # server[n, s, :]: Mbit/s, J per Mbit, virtual time, next end
_RUN, _UP = range(2)  # count[n, s, :]: tasks running, tasks uploading
_WORK, _FINISH, _UPLOAD = range(3)  # task[n, j, :]: Mbit, finish mark, upload end (abs. s)
_STEP, _DISPATCHED, _USER, _QUEUE = range(4)  # env[n, :]
_STATIC = ("present", "is_cloud", "cpu_freq", "num_edges")  # static[n, i, s], fixed per episode


# --- Compiled kernels: one env per loop iteration ----------------------------------------------
# Processor sharing in virtual time: server[n, s, _V] is the service each task running on s has
# received so far; a task admitted with work w gets the finish mark v + w and runs while the mark
# exceeds v by more than _EPS_MBIT. An interval where no task finishes only moves v; otherwise the
# exact water level comes from cost_model.ps_row_served over the server's sorted remaining work.


@njit(cache=True)
def _running_work(n, s, v, task, task_server, out):
    """Remaining work of the tasks running on server ``s`` of env ``n``, sorted, in ``out[:k]``."""
    k = 0
    for j in range(task_server.shape[1]):
        if task_server[n, j] == s:
            r = task[n, j, _FINISH] - v
            if r > _EPS_MBIT:
                out[k] = r
                k += 1
    out[:k].sort()
    return k


@njit(cache=True)
def _serve(n, tau_s, server, count, task, task_server, scratch):
    """Processor sharing on every server of env ``n`` for ``tau_s`` seconds, no arrivals."""
    for s in range(server.shape[1]):
        running = count[n, s, _RUN]
        if running == 0:
            continue
        v = server[n, s, _V]
        capacity = tau_s * server[n, s, _MU]
        share = capacity / running
        if server[n, s, _FMIN] - v > share + _EPS_MBIT:  # nobody finishes: only v moves
            server[n, s, _V] = v + share
            continue
        k = _running_work(n, s, v, task, task_server, scratch)
        v += min(ps_row_served(scratch[:k], capacity), scratch[k - 1])
        server[n, s, _V] = v
        running, first_end = 0, math.inf
        for j in range(task_server.shape[1]):
            if task_server[n, j] == s and task[n, j, _FINISH] - v > _EPS_MBIT:
                running += 1
                first_end = min(first_end, task[n, j, _FINISH])
        count[n, s, _RUN] = running
        server[n, s, _FMIN] = first_end


@njit(cache=True)
def _run_until(n, now_s, end_s, server, count, task, task_server, scratch):
    """Advance env ``n`` from ``now_s`` to ``end_s``, admitting each upload when it completes."""
    while True:
        j_next, t_next = -1, math.inf
        for j in range(task.shape[1]):
            if task[n, j, _UPLOAD] < t_next:
                j_next, t_next = j, task[n, j, _UPLOAD]
        if t_next > end_s:
            _serve(n, end_s - now_s, server, count, task, task_server, scratch)
            return
        _serve(n, t_next - now_s, server, count, task, task_server, scratch)
        now_s = t_next
        s = task_server[n, j_next]
        finish = server[n, s, _V] + task[n, j_next, _WORK]
        task[n, j_next, _FINISH] = finish
        task[n, j_next, _UPLOAD] = math.inf
        count[n, s, _RUN] += 1
        count[n, s, _UP] -= 1
        server[n, s, _FMIN] = min(server[n, s, _FMIN], finish)


@njit(cache=True)
def _present(
    n, episode_steps, server, count, task, task_server, env, task_mbit, rate_bps, rate_feat,
    arrived_cum, stream_mbit, stream_user, static, obs, hist, scratch,
):  # fmt: skip
    """Show env ``n`` the head of its FIFO queue (an empty task when none waits) and write its
    observation. Idempotent: the head moves only when a task is dispatched."""
    t, done = env[n, _STEP], env[n, _DISPATCHED]
    arrived = arrived_cum[n, t]
    has = arrived > done and t < episode_steps
    task_mbit[n] = stream_mbit[n, done] if has else 0.0
    user = stream_user[n, done] if has else 0
    env[n, _USER] = user
    env[n, _QUEUE] = arrived - done - (1 if has else 0)
    size, now, scale = task_mbit[n] / TASK_MBIT_MAX, t / episode_steps, 1.0 / episode_steps
    for s in range(server.shape[1]):
        present = static[n, 0, s]
        obs[n, 0, s] = present
        obs[n, 1, s] = static[n, 1, s]
        obs[n, 2, s] = size * present
        obs[n, 3, s] = rate_feat[n, s, user]
        obs[n, 4, s] = static[n, 2, s]
        obs[n, 5, s] = count[n, s, _RUN] * scale
        obs[n, 6, s] = count[n, s, _UP] * scale
        obs[n, 7, s] = static[n, 3, s]
        obs[n, 8, s] = now * present
    hist[:] = 0
    for j in range(task_server.shape[1]):
        s = task_server[n, j]
        if s >= 0:
            r = task[n, j, _FINISH] - server[n, s, _V]
            if r > _EPS_MBIT:
                hist[min(int(r / HIST_BIN_MBIT), HIST_BINS - 1), s] += 1
    for b in range(HIST_BINS):
        for s in range(server.shape[1]):
            obs[n, _HIST_ROW + b, s] = hist[b, s] * 0.1  # counts / 10
    if obs.shape[1] > _COST_ROW:  # cost_features=True
        for s in range(server.shape[1]):
            delay_s = energy_j = 0.0
            if has and static[n, 0, s] > 0.0:
                delay_s, energy_j, _ = _dispatch_cost(
                    n, s, task_mbit[n], user, server, task, task_server, rate_bps, scratch
                )
            obs[n, _COST_ROW, s] = ALPHA_T_PER_S * delay_s
            obs[n, _COST_ROW + 1, s] = ALPHA_E_PER_J * energy_j


@njit(cache=True)
def _dispatch_cost(n, a, size, user, server, task, task_server, rate_bps, scratch):
    """(delay s, energy J, upload s) that sending a ``size``-Mbit task of ``user`` to server
    ``a`` of env ``n`` is charged; changes nothing but ``scratch``."""
    mu = server[n, a, _MU]
    tx_s = size * 1e6 / rate_bps[n, a, user]
    energy_j = TX_POWER_W * tx_s + server[n, a, _EXEC] * size
    # The running tasks progress during the upload, then the new one joins them.
    k = _running_work(n, a, server[n, a, _V], task, task_server, scratch)
    level = ps_row_served(scratch[:k], tx_s * mu)
    for i in range(k):
        scratch[i] = max(scratch[i] - level, 0.0)
    own, added = ps_row_own_added(scratch[:k], size)
    return tx_s + (own + added) / mu, energy_j, tx_s


@njit(cache=True)
def _dispatch(
    n, a, server, count, task, task_server, env, task_mbit, rate_bps, reward, outcome, scratch
):
    """Send env ``n``'s current task to server ``a``, charge its reward, advance one step."""
    t, size = env[n, _STEP], task_mbit[n]
    delay_s = energy_j = 0.0
    if size > 0.0:
        delay_s, energy_j, tx_s = _dispatch_cost(
            n, a, size, env[n, _USER], server, task, task_server, rate_bps, scratch
        )
        task_server[n, t] = a
        task[n, t, _WORK] = size
        task[n, t, _FINISH] = _NOT_RUNNING
        task[n, t, _UPLOAD] = t * DT_S + tx_s
        count[n, a, _UP] += 1
        env[n, _DISPATCHED] += 1
    reward[n, 0] = -ALPHA_T_PER_S * delay_s
    reward[n, 1] = -ALPHA_E_PER_J * energy_j
    outcome[n, 0] = delay_s
    outcome[n, 1] = energy_j
    _run_until(n, t * DT_S, (t + 1) * DT_S, server, count, task, task_server, scratch)
    env[n, _STEP] = t + 1


@njit(cache=True)
def _step_kernel(
    actions, active, episode_steps, server, count, task, task_server, env, task_mbit, rate_bps,
    rate_feat, arrived_cum, stream_mbit, stream_user, static, obs, reward, outcome, truncated,
    scratch, hist,
):  # fmt: skip
    """One step of every active env (inactive ones only get their observation rewritten)."""
    for n in range(actions.shape[0]):
        if active[n]:
            _dispatch(
                n, actions[n], server, count, task, task_server, env, task_mbit, rate_bps,
                reward, outcome, scratch,
            )  # fmt: skip
        else:
            reward[n, 0] = reward[n, 1] = 0.0
            outcome[n, 0] = outcome[n, 1] = 0.0
        _present(
            n, episode_steps, server, count, task, task_server, env, task_mbit, rate_bps,
            rate_feat, arrived_cum, stream_mbit, stream_user, static, obs, hist, scratch,
        )  # fmt: skip
        truncated[n] = env[n, _STEP] >= episode_steps


@njit(cache=True)
def _advance_kernel(end_s, server, count, task, task_server, env, scratch):
    """Run every env's servers from its clock to ``end_s[n]`` without dispatching (tests)."""
    for n in range(end_s.shape[0]):
        _run_until(n, env[n, _STEP] * DT_S, end_s[n], server, count, task, task_server, scratch)


class GMORLBatchedCore:
    """The state of N independent GMORL worlds and the step that advances them together.

    Arrays (N envs, S = max_edges + 1 servers, T task slots per env: slot t holds the task
    dispatched at step t). Named views are public for inspection: ``n_running``, ``n_uploading``,
    ``v_mbit`` (virtual time per server), ``task_server`` (-1 = none), ``task_work_mbit``,
    ``task_finish_mbit``, ``upload_done_s``, ``step_index``, ``dispatched``, ``task_user``,
    ``queue_length``, ``delay_s``, ``energy_j``; ``obs`` is a new array after every call.
    ``reset`` draws from the caller's generator (the only randomness); ``step`` is deterministic.
    """

    def __init__(
        self,
        num_envs: int,
        *,
        max_edges: int = 10,
        ranges: Literal["train", "test"] = "train",
        num_edges: int | None = None,
        cloud_ghz: float | None = None,
        edge_ghz: float | None = None,
        min_rate_bps: float = DEFAULT_MIN_RATE_BPS,
        channel: Literal["paper", "predecessor"] = "predecessor",
        episode_steps: int = EPISODE_STEPS,
        cost_features: bool = False,
    ) -> None:
        if not isinstance(cost_features, (bool, np.bool_)):
            raise ValueError(f"cost_features must be a bool, got {cost_features!r}")
        for name, value in (
            ("num_envs", num_envs),
            ("max_edges", max_edges),
            ("episode_steps", episode_steps),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if ranges not in RANGES:
            raise ValueError(f"ranges must be one of {sorted(RANGES)}, got {ranges!r}")
        if channel not in ("paper", "predecessor"):
            raise ValueError(f"channel must be 'paper' or 'predecessor', got {channel!r}")
        if not (isinstance(min_rate_bps, (int, float)) and 0 < min_rate_bps < math.inf):
            raise ValueError(f"min_rate_bps must be positive and finite, got {min_rate_bps!r}")
        box = RANGES[ranges]
        if num_edges is not None:
            if not isinstance(num_edges, (int, np.integer)) or not 1 <= num_edges <= max_edges:
                raise ValueError(f"num_edges must be an int in 1..{max_edges}, got {num_edges!r}")
            self.edge_range = (int(num_edges), int(num_edges))
        elif box["num_edges"][1] > max_edges:
            raise ValueError(
                f"ranges={ranges!r} draws up to {box['num_edges'][1]} edges but max_edges={max_edges}"
            )
        else:
            self.edge_range = box["num_edges"]
        for name, value in (("cloud_ghz", cloud_ghz), ("edge_ghz", edge_ghz)):
            if value is not None and not (
                isinstance(value, (int, float)) and 0.0 < value <= MAX_GHZ
            ):
                raise ValueError(f"{name} must be in (0, {MAX_GHZ}] GHz, got {value!r}")
        self.cloud_ghz_range = box["cloud_ghz"] if cloud_ghz is None else (cloud_ghz, cloud_ghz)
        self.edge_ghz_range = box["edge_ghz"] if edge_ghz is None else (edge_ghz, edge_ghz)

        self.num_envs = n = int(num_envs)
        self.max_edges = int(max_edges)
        self.num_servers = s = self.max_edges + 1
        self.episode_steps = t = int(episode_steps)
        self.min_rate_bps = float(min_rate_bps)
        self.channel = channel
        self.cost_features = bool(cost_features)
        rows = NUM_FEATURES + (len(COST_FEATURES) if cost_features else 0)
        self.obs_shape = (rows, s)  # one column per server, as in the predecessor code
        # Arrival stream capacity: mean lambda U T = 100 arrivals; P(Poisson(100) > 264) ~ 1e-40.
        self.stream_len = m = int(2 * ARRIVAL_RATE_PER_USER_HZ * NUM_USERS * DT_S * t) + 64
        self._server_ids = np.arange(s)

        # Configuration, drawn at reset.
        self.num_edges = np.zeros(n, np.int64)
        self.present = np.zeros((n, s), bool)
        self.freq_ghz = np.zeros((n, s))
        self.mean_task_mbit = np.zeros(n)
        self.rate_bps = np.ones((n, s, NUM_USERS))
        self._rate_feat = np.zeros((n, s, NUM_USERS))  # observation row "rate"
        self._static = np.zeros((n, len(_STATIC), s), np.float32)
        self.arrived_cum = np.zeros((n, t + 1), np.int64)  # arrivals by each decision epoch
        self.stream_mbit = np.zeros((n, m))
        self.stream_user = np.zeros((n, m), np.int64)
        # Dynamic state (packed) and outputs.
        self._server = np.zeros((n, s, 4))
        self._count = np.zeros((n, s, 2), np.int64)
        self._task = np.zeros((n, t, 3))
        self.task_server = np.full((n, t), -1, np.int64)
        self._env = np.zeros((n, 4), np.int64)
        self.task_mbit = np.zeros(n)  # current task (0: none waiting)
        self.reward = np.zeros((n, 2), np.float32)
        self._outcome = np.zeros((n, 2))
        self.truncated = np.zeros(n, bool)
        self.obs = np.zeros((n, *self.obs_shape), np.float32)
        self._scratch = np.zeros(t)
        self._hist = np.zeros((HIST_BINS, s), np.int64)
        self._all, self._none = np.ones(n, bool), np.zeros(n, bool)
        self._no_actions = np.zeros(n, np.int64)
        # Named views of the packed arrays.
        self.v_mbit, self.fmin_mbit = self._server[..., _V], self._server[..., _FMIN]
        self.n_running, self.n_uploading = self._count[..., _RUN], self._count[..., _UP]
        self.task_work_mbit = self._task[..., _WORK]
        self.task_finish_mbit = self._task[..., _FINISH]
        self.upload_done_s = self._task[..., _UPLOAD]
        self.step_index, self.dispatched = self._env[:, _STEP], self._env[:, _DISPATCHED]
        self.task_user, self.queue_length = self._env[:, _USER], self._env[:, _QUEUE]
        self.delay_s, self.energy_j = self._outcome[:, 0], self._outcome[:, 1]

        self.reward_low = self._reward_lower_bound()
        high = np.ones(self.obs_shape[0], np.float32)
        high[FEATURES.index("cpu_freq")] = MAX_GHZ / 5.0
        high[_HIST_ROW:_COST_ROW] = t / 10.0  # histogram counts / 10, at most T tasks
        if self.cost_features:
            high[_COST_ROW:] = -self.reward_low  # -reward of one dispatch
        self.obs_high = np.repeat(high[:, None], s, axis=1)

    def _reward_lower_bound(self) -> np.ndarray:
        """Worst [r_T, r_E] from the clipping bounds: a 100 Mbit task at the rate floor behind
        T - 1 running tasks on the slowest CPU (delay), on the fastest CPU (energy)."""
        f_lo = min(self.cloud_ghz_range[0], self.edge_ghz_range[0])
        f_hi = max(self.cloud_ghz_range[1], self.edge_ghz_range[1])
        tx_max_s = TASK_MBIT_MAX * 1e6 / self.min_rate_bps
        work_max_s = TASK_MBIT_MAX * 1e6 * CYCLES_PER_BIT / (f_lo * 1e9)
        others = self.episode_steps - 1  # tasks already on the server, at most
        # own <= tx + w + n w and added <= n w (each running task gains at most w)
        delay_max_s = tx_max_s + work_max_s * (1 + 2 * others)
        energy_max_j = (
            TX_POWER_W * tx_max_s + KAPPA * CYCLES_PER_BIT * (f_hi * 1e9) ** 2 * TASK_MBIT_MAX * 1e6
        )
        low = -np.array([ALPHA_T_PER_S * delay_max_s, ALPHA_E_PER_J * energy_max_j])
        return (low * (1 + 1e-6)).astype(np.float32)

    def reset(self, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Draw a new world for the envs in ``mask`` (all when None) from ``rng``; every env's
        observation is rewritten into a new ``obs``."""
        idx = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        if len(idx):
            self._draw(rng, idx)
        self._present()

    def _draw(self, rng: np.random.Generator, idx: np.ndarray) -> None:
        """Draw configuration, channel and arrival stream of envs ``idx``; empty their servers."""
        k, s, t, m = len(idx), self.num_servers, self.episode_steps, self.stream_len
        num_edges = rng.integers(self.edge_range[0], self.edge_range[1] + 1, size=k)
        f0 = rng.uniform(*self.cloud_ghz_range, size=k)
        fe = rng.uniform(*self.edge_ghz_range, size=(k, self.max_edges))
        present = self._server_ids <= num_edges[:, None]
        freq = np.concatenate([f0[:, None], fe], axis=1) * present
        self.num_edges[idx] = num_edges
        self.present[idx] = present
        self.freq_ghz[idx] = freq
        is_cloud = np.broadcast_to(self._server_ids == 0, present.shape)
        edges = (num_edges / self.max_edges)[:, None] * present
        self._static[idx] = np.stack([present, is_cloud, freq / 5.0, edges], axis=1)
        # 100 % load: dt * sum f / eta = lambda U L_mean (RN sec. 5).
        arrivals_per_step = ARRIVAL_RATE_PER_USER_HZ * NUM_USERS * DT_S
        mean_mbit = DT_S * freq.sum(1) * 1e9 / CYCLES_PER_BIT / arrivals_per_step / 1e6
        self.mean_task_mbit[idx] = mean_mbit

        # Channel per (server, user), held for the episode.
        is_cloud = (self._server_ids == 0)[None, :, None]
        lo = np.where(is_cloud, CLOUD_DIST_M[0], EDGE_DIST_M[0])
        hi = np.where(is_cloud, CLOUD_DIST_M[1], EDGE_DIST_M[1])
        dist_m = rng.uniform(lo, hi, size=(k, s, NUM_USERS))
        fading = rng.exponential(1.0, size=(k, s, NUM_USERS))  # Rayleigh |h|^2 ~ Exp(1)
        loss_db = PATH_LOSS_DB_PER_DECADE * np.log10(dist_m / 1e3) + PATH_LOSS_DB_AT_1KM
        if self.channel == "paper":
            shadow_db = rng.normal(0.0, SHADOWING_STD_DB, size=(k, s, NUM_USERS))
            gain = 10.0 ** ((shadow_db - loss_db) / 10.0) * fading
        else:  # predecessor code: fixed -8 dB, and the noise-normalised gain enters squared
            gain = (10.0 ** ((-SHADOWING_STD_DB - loss_db) / 10.0) * fading / NOISE_W) ** 2
        rate = shannon_rate_bps(BANDWIDTH_HZ, TX_POWER_W, gain, NOISE_W)
        rate = np.maximum(rate, self.min_rate_bps)
        self.rate_bps[idx] = rate
        self._rate_feat[idx] = np.clip((np.log10(rate) - 4.0) / 5.0, 0.0, 1.0) * present[..., None]

        # Arrival stream of the whole episode.
        counts = rng.poisson(arrivals_per_step, size=(k, t + 1))
        self.arrived_cum[idx] = np.minimum(np.cumsum(counts, axis=1), m)
        sizes = rng.exponential(1.0, size=(k, m)) * mean_mbit[:, None]
        self.stream_mbit[idx] = np.clip(sizes, TASK_MBIT_MIN, TASK_MBIT_MAX)
        self.stream_user[idx] = rng.integers(0, NUM_USERS, size=(k, m))

        # Empty servers, no tasks.
        server = self._server[idx]
        server[..., _MU] = freq * 1e9 / CYCLES_PER_BIT / 1e6
        server[..., _EXEC] = KAPPA * CYCLES_PER_BIT * (freq * 1e9) ** 2 * 1e6  # J per Mbit
        server[..., _V] = 0.0
        server[..., _FMIN] = np.inf
        self._server[idx] = server
        self._count[idx] = 0
        self._task[idx] = (0.0, _NOT_RUNNING, np.inf)
        self.task_server[idx] = -1
        self._env[idx] = 0

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
        """Dispatch each active env's current task to ``actions[i]`` (valid, unmasked: the env
        classes check) and advance it one step; inactive envs stay as they are.

        Fills ``reward`` (float32, [r_T, r_E]), ``delay_s``, ``energy_j`` and a new ``obs``.

        Returns:
            truncated, bool (N,): the env has taken T steps.
        """
        self.obs = np.empty((self.num_envs, *self.obs_shape), np.float32)
        _step_kernel(
            actions, self._all if active is None else active, self.episode_steps, self._server,
            self._count, self._task, self.task_server, self._env, self.task_mbit, self.rate_bps,
            self._rate_feat, self.arrived_cum, self.stream_mbit, self.stream_user, self._static,
            self.obs, self.reward, self._outcome, self.truncated, self._scratch, self._hist,
        )  # fmt: skip
        return self.truncated

    def _present(self) -> None:
        """Show every env its current task and write a new ``obs`` (no time passes)."""
        self.obs = np.empty((self.num_envs, *self.obs_shape), np.float32)
        _step_kernel(
            self._no_actions, self._none, self.episode_steps, self._server, self._count,
            self._task, self.task_server, self._env, self.task_mbit, self.rate_bps,
            self._rate_feat, self.arrived_cum, self.stream_mbit, self.stream_user, self._static,
            self.obs, self.reward, self._outcome, self.truncated, self._scratch, self._hist,
        )  # fmt: skip

    def _run_until(self, end_s: np.ndarray) -> None:
        """Run every env's servers from its clock to ``end_s`` without dispatching (tests)."""
        _advance_kernel(
            np.asarray(end_s, float), self._server, self._count, self._task, self.task_server,
            self._env, self._scratch,
        )  # fmt: skip


def _reward_space(core: GMORLBatchedCore) -> spaces.Box:
    return spaces.Box(core.reward_low, np.zeros(2, np.float32), dtype=np.float32)


def _obs_space(core: GMORLBatchedCore) -> spaces.Box:
    return spaces.Box(np.zeros(core.obs_shape, np.float32), core.obs_high, dtype=np.float32)


class GMORLOffloadEnv(gym.Env):
    """GMORL's multi-objective task offloading: one cloud and E edge servers, one task per step.

    ## Description

    Ten users generate tasks (Poisson, 0.1 per user per s) of exponential size (mean set for 100 %
    load, ``dt * sum f / eta = lambda U L_mean``: 16 Mbit at E = 6, 4 GHz cloud, 2 GHz edges;
    clipped to [0.1, 100] Mbit; eta = 1000 cycles/bit). Tasks wait in a FIFO queue; every 1 s step
    the agent sends the head task to the cloud (server 0) or one of the E edges. The task uploads
    over its user's link (C = W log2(1 + p |h|^2 / N0 W), W = 16.6 MHz, p = 10 mW, -174 dBm/Hz,
    path loss 35 log10(d_km) + 133.6 dB, 8 dB log-normal shadowing, Rayleigh fading; cloud 1-2 km,
    edges 50-500 m; drawn per user and server at reset; floored at ``min_rate_bps``), then shares
    its server's CPU with the tasks running there (processor sharing, speed f / (n eta) each).
    Numbers: ``shared/REFERENCE_NUMBERS.md`` sec. 5; departures from the predecessor code are
    listed in the module docstring. The preference over objectives is not part of the env.

    ## Action space

    ``Discrete(max_edges + 1)``: 0 = cloud, e = edge e. Edges beyond E are masked
    (:meth:`action_masks`, ``info["action_mask"]``); the cloud is always valid. A masked action
    raises ``ValueError`` (naming the action and the mask) unless ``invalid_action="fallback"``,
    which sends the task to the cloud and sets ``info["fallback"] = True``. An action that is not an
    integer in range always raises ``ValueError`` naming the value.

    ## Observation space

    ``Box(0, high, (69, max_edges + 1), float32)``: one column per server (column 0 = cloud,
    columns > E all zero; features x servers, as in the predecessor code), a padded encoding that a
    permutation-invariant network can read column by column. Rows (``FEATURES`` names 0-8):

    | row | feature | value | bounds |
    |---|---|---|---|
    | 0 | present | 1 for the cloud and edges 1..E | [0, 1] |
    | 1 | is_cloud | 1 in column 0 | [0, 1] |
    | 2 | task_size | current task size / 100 Mbit (0: no task waiting) | [0, 1] |
    | 3 | rate | (log10(C / bit/s) - 4) / 5 from the task's user (user 0 if none), clipped | [0, 1] |
    | 4 | cpu_freq | f / 5 GHz | [0, 2] |
    | 5 | num_running | tasks executing on the server / T | [0, 1] |
    | 6 | num_uploading | tasks uploading to the server / T | [0, 1] |
    | 7 | num_edges | E / max_edges | [0, 1] |
    | 8 | time | steps taken / T | [0, 1] |
    | 9-68 | histogram | running tasks by remaining execution size, 1 Mbit bins (last: >= 59), count / 10 | [0, T / 10] |
    | 69-70 | predicted_delay, predicted_energy | only with ``cost_features=True`` (not in the paper): -reward that sending the current task to this server would get now (0: absent server or no task) | [0, -reward_space.low] |

    ## Rewards

    A float32 vector ``[r_T, r_E]``, charged when the task is dispatched:
    ``r_T = -0.01 * (own delay + delay added to the tasks already running on that server)`` in s,
    own delay = upload L / C + processor-sharing completion, both assuming no further arrivals
    (the running tasks progress during the upload); ``r_E = -50 * (p L / C + kappa eta f^2 L)``
    in J, kappa = 5e-31. An empty task gives [0, 0]. :attr:`reward_space` bounds every reward
    (worst case: a 100 Mbit task at the rate floor behind T - 1 tasks on the slowest CPU);
    ``info["delay_s"]`` and ``info["energy_j"]`` hold the unscaled values.

    ``info`` also carries ``action_mask`` (for the next decision), ``task_mbit`` (the task now
    shown; 0 = none waiting), ``queue_length`` (tasks waiting behind it) and, after ``step``,
    ``fallback``.

    ## Starting state

    E, the cloud and edge frequencies, user distances, shadowing and fading and the episode's
    arrival stream are drawn from ``self.np_random`` (``reset(seed=)``); servers start empty.
    Ranges: ``"train"`` E in 1..8, f_0 in [3.5, 4.5] GHz, f_e in [1.75, 2.25] GHz; ``"test"`` E in
    1..10, f_0 in [3.0, 5.0], f_e in [1.5, 2.5]. ``num_edges``, ``cloud_ghz`` and ``edge_ghz`` fix
    their part (E = 6, 4 GHz, 2 GHz is the paper's evaluation setting).

    ## Episode end

    Never terminates; ``truncated=True`` after T = 100 steps.

    ## Arguments

    ``render_mode`` (None or "ansi"), ``max_edges`` (10; observation padding), ``ranges``
    ("train" | "test"), ``num_edges``, ``cloud_ghz``, ``edge_ghz`` (fixed values override the
    ranges), ``invalid_action`` ("fallback", default | "raise"), ``min_rate_bps`` (1e4),
    ``channel`` ("predecessor", default: the code the published results came from, fast links;
    "paper": the formula of REFERENCE_NUMBERS sec. 5 taken literally, the cloud at ~25 kbit/s),
    ``episode_steps`` (100), ``cost_features`` (False; True adds observation rows 69-70, the
    myopic costs the greedy baseline minimises, so a policy need not learn the cost formulas).

    ## Version history

    - v0: first version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        render_mode: str | None = None,
        *,
        invalid_action: Literal["raise", "fallback"] = "fallback",
        **core_kwargs: Any,
    ) -> None:
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        if invalid_action not in ("raise", "fallback"):
            raise ValueError(
                f"invalid_action must be 'raise' or 'fallback', got {invalid_action!r}"
            )
        self.render_mode = render_mode
        self.invalid_action = invalid_action
        self._core = GMORLBatchedCore(1, **core_kwargs)
        self.observation_space = _obs_space(self._core)
        self.action_space = spaces.Discrete(self._core.num_servers)
        self.reward_space = _reward_space(self._core)
        self.reward_dim = 2
        self._act = np.zeros(1, np.int64)
        self._started = False
        self._ended = False
        self._last: tuple[int, bool] | None = None

    @property
    def core(self) -> GMORLBatchedCore:
        """The batched core this env is a view of (read its state; do not mutate it)."""
        return self._core

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._core.reset(self.np_random)
        self._started, self._ended, self._last = True, False, None
        return self._core.obs[0], self._info()  # core.obs is a new array every step

    def step(self, action: Any) -> tuple[np.ndarray, np.ndarray, bool, bool, dict[str, Any]]:
        if not self._started or self._ended:
            raise RuntimeError(
                "call reset() before step() (the episode has not started or has ended)"
            )
        a = _as_action(action, self._core.num_servers)
        fallback = False
        if not self._core.present[0, a]:
            if self.invalid_action == "raise":
                mask = self._core.present[0].astype(int).tolist()
                raise ValueError(f"action {a} is masked (server not in use); action_mask={mask}")
            a, fallback = 0, True
        self._act[0] = a
        truncated = bool(self._core.step(self._act)[0])
        self._ended = truncated
        self._last = (a, fallback)
        info = self._info()
        info["fallback"] = fallback
        info["delay_s"] = float(self._core.delay_s[0])
        info["energy_j"] = float(self._core.energy_j[0])
        return self._core.obs[0], self._core.reward[0].copy(), False, truncated, info

    def action_masks(self) -> np.ndarray:
        """Valid actions (bool, one per server): the cloud and edges 1..E."""
        return self._core.present[0].copy()

    def _info(self) -> dict[str, Any]:
        core = self._core
        return {
            "action_mask": core.present[0].copy(),
            "task_mbit": float(core.task_mbit[0]),
            "queue_length": int(core.queue_length[0]),
        }

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        core = self._core
        t, e = int(core.step_index[0]), int(core.num_edges[0])
        lines = [
            f"GMORLOffload step {t}/{core.episode_steps}  E={e}  queue={int(core.queue_length[0])}",
            f"task: {core.task_mbit[0]:.2f} Mbit from user {int(core.task_user[0])}",
        ]
        if self._last is not None:
            a, fb = self._last
            r = core.reward[0]
            lines.append(
                f"last action: {a} ({'cloud' if a == 0 else f'edge {a}'}"
                f"{', fallback' if fb else ''})  reward [r_T, r_E] = [{r[0]:.4f}, {r[1]:.4f}]"
                f"  delay {core.delay_s[0]:.2f} s  energy {core.energy_j[0]:.4f} J"
            )
        lines.append("server   f_GHz  rate_Mbps  running  uploading  remaining_Mbit")
        where = core.task_server[0]
        left = np.maximum(core.task_finish_mbit[0] - core.v_mbit[0, where], 0.0)[where >= 0]
        remaining = np.bincount(where[where >= 0], weights=left, minlength=core.num_servers)
        for srv in range(e + 1):
            name = "cloud" if srv == 0 else f"edge {srv}"
            rate = core.rate_bps[0, srv, core.task_user[0]] / 1e6
            lines.append(
                f"{name:<8} {core.freq_ghz[0, srv]:6.2f} {rate:10.3f} {core.n_running[0, srv]:8d}"
                f" {core.n_uploading[0, srv]:10d} {remaining[srv]:15.2f}"
            )
        return "\n".join(lines)


def _as_action(action: Any, n: int) -> int:
    """The action as an int in [0, n); ValueError naming the value otherwise."""
    is_int = isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_))
    if isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu":
        is_int = True
    if not is_int:
        raise ValueError(f"action {action!r} is not an integer in Discrete({n})")
    a = int(action)
    if not 0 <= a < n:
        raise ValueError(f"action {a} is outside Discrete({n}) (valid: 0..{n - 1})")
    return a


class GMORLVectorEnv(VectorEnv):
    """``num_envs`` GMORL worlds stepped together (same dynamics as :class:`GMORLOffloadEnv`).

    Each sub-env draws its own E and frequencies (domain randomisation per env); one generator,
    ``self.np_random``, feeds all of them. Rewards have shape (num_envs, 2); ``action_masks()``
    (num_envs, max_edges + 1). Autoreset: Gymnasium's NEXT_STEP mode (the step after a truncation
    resets that env, ignores its action and returns reward 0). ``options={"reset_mask": mask}``
    resets only some envs. Masked actions raise ``ValueError`` or, with
    ``invalid_action="fallback"``, go to the cloud and set ``info["fallback"][i]``.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 64,
        *,
        invalid_action: Literal["raise", "fallback"] = "fallback",
        **core_kwargs: Any,
    ) -> None:
        if invalid_action not in ("raise", "fallback"):
            raise ValueError(
                f"invalid_action must be 'raise' or 'fallback', got {invalid_action!r}"
            )
        self._core = core = GMORLBatchedCore(num_envs, **core_kwargs)
        self.num_envs = core.num_envs
        self.invalid_action = invalid_action
        self.single_observation_space = _obs_space(core)
        self.single_action_space = spaces.Discrete(core.num_servers)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_reward_space = _reward_space(core)
        self.reward_space = spaces.Box(
            np.tile(core.reward_low, (self.num_envs, 1)),
            np.zeros((self.num_envs, 2), np.float32),
            dtype=np.float32,
        )
        self.reward_dim = 2
        self._autoreset = np.zeros(self.num_envs, bool)
        self._ar = np.arange(self.num_envs)
        self._started = False

    @property
    def core(self) -> GMORLBatchedCore:
        """The batched core this env is a view of (read its state; do not mutate it)."""
        return self._core

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """``seed``: an int seeds the one Generator all sub-envs draw from; a list of
        ``num_envs`` ints gives each sub-env its own (equal seeds: every sub-env plays the same
        episodes, the evaluation protocol)."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed must be an int or {self.num_envs} ints, got {seed!r}")
            self._rngs = [np.random.default_rng(s) for s in seeds]
            seed = None
        elif seed is not None:
            self._rngs = None
        super().reset(seed=seed)
        mask = None if not options else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
            if not self._started and not mask.all():
                raise ValueError("the first reset must reset every env (reset_mask all True)")
        self._reset_rows(np.ones(self.num_envs, bool) if mask is None else mask)
        self._autoreset[slice(None) if mask is None else mask] = False
        self._started = True
        return self._core.obs, self._info(np.zeros(self.num_envs, bool))

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        core, n = self._core, self.num_envs
        acts = np.asarray(actions)
        if acts.shape != (n,) or acts.dtype.kind not in "iu":
            raise ValueError(f"actions must be {n} integers, got {actions!r}")
        bad = (acts < 0) | (acts >= core.num_servers)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"action {int(acts[i])} of env {i} is outside Discrete({core.num_servers})"
            )
        done = self._autoreset
        masked = ~core.present[self._ar, acts] & ~done
        if masked.any():
            if self.invalid_action == "raise":
                i = int(np.flatnonzero(masked)[0])
                mask = core.present[i].astype(int).tolist()
                raise ValueError(f"action {int(acts[i])} of env {i} is masked; action_mask={mask}")
            acts = np.where(masked, 0, acts)
        if done.all():  # NEXT_STEP autoreset of every env: actions ignored, reward 0
            self._reset_rows(done)
            rewards, truncated = np.zeros((n, 2), np.float32), np.zeros(n, bool)
            delay_s, energy_j = np.zeros(n), np.zeros(n)
        else:  # the ended envs are inactive in this step (reward 0), then restart
            truncated = core.step(acts.astype(np.int64, copy=False), ~done).copy()
            rewards = core.reward.copy()
            delay_s, energy_j = core.delay_s.copy(), core.energy_j.copy()
            if done.any():
                self._reset_rows(done)
                truncated[done] = False
        self._autoreset = truncated.copy()
        info = self._info(masked)
        info["delay_s"], info["energy_j"] = delay_s, energy_j
        info["_delay_s"] = info["_energy_j"] = ~done
        return core.obs, rewards, np.zeros(n, bool), truncated, info

    def _reset_rows(self, which: np.ndarray) -> None:
        if getattr(self, "_rngs", None) is None:
            self._core.reset(self.np_random, None if which.all() else which)
            return
        for i in np.flatnonzero(which):  # a whole episode is drawn at reset
            one = np.zeros(self.num_envs, bool)
            one[i] = True
            self._core.reset(self._rngs[i], one)

    def action_masks(self) -> np.ndarray:
        """Valid actions, bool (num_envs, max_edges + 1)."""
        return self._core.present.copy()

    def _info(self, fallback: np.ndarray) -> dict[str, Any]:
        every = np.ones(self.num_envs, bool)
        return {
            "action_mask": self._core.present.copy(),
            "_action_mask": every,
            "fallback": fallback,
            "_fallback": every,
            "queue_length": self._core.queue_length.copy(),
            "_queue_length": every,
        }
