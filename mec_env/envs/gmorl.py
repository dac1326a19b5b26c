"""GMORL's task-offloading world (arXiv 2509.10474), batched over environments.

One cloud (server 0) and E edge servers receive generic tasks of L bits that need eta cycles per
bit; the agent picks the server for one task per 1 s step and is rewarded with the negated delay
and energy of that choice. All numbers come from ``shared/REFERENCE_NUMBERS.md`` sec. 5 (RN).

Three public classes share one implementation of the dynamics:

- :class:`GMORLBatchedCore` holds the state of N worlds as numpy arrays and steps them together;
- :class:`GMORLOffloadEnv` is a ``gymnasium.Env`` over a core with N = 1;
- :class:`GMORLVectorEnv` is a ``gymnasium.vector.VectorEnv`` over a core with N = ``num_envs``.

Where RN (the paper's Table 2) and the predecessor code (gracefulning/mec_morl_multipolicy,
``env/MEC_env.py``) disagree, RN is followed:

- channel: the code computes ``log2(1 + p * g**2 / N0W)`` with ``g = |h|^2 PL / N0W`` and a fixed
  -8 dB shadowing term, which gives every link hundreds of Mbit/s; here
  ``C = W log2(1 + p |h|^2 / (N0 W))`` with 8 dB log-normal shadowing, so a cloud 1-2 km away is
  reached at tens of kbit/s. ``channel="predecessor"`` reproduces the code's rates.
- delay reward: the code leaves the task's own upload time out of r_T (and counts the running tasks
  twice when the upload outlasts all of them); here r_T includes the upload time L / C.
- task size clip: [0.1, 100] Mbit (the code's multi-edge config), not its single-edge 30 Mbit.

Modelling rules chosen here (each also stated in the env card):

- arrivals: the episode's arrival stream (Poisson counts per step, i.i.d. sizes and users in arrival
  order) is drawn at reset; the FIFO queue is the window [dispatched, arrived) of that stream. This
  has the same distribution as drawing online, costs no random numbers per step, and keeps the
  queue in fixed-size arrays. When no task is waiting the agent sees an empty task (size 0, as the
  predecessor code does): any valid action is accepted and both rewards are 0.
- channel: distances, shadowing and Rayleigh fading are drawn per (server, user) at reset and held
  for the episode (block fading, as the predecessor code does); rates are floored at
  ``min_rate_bps`` so that every reward is bounded.
- execution: a task uploads for L / C seconds (uploads do not share bandwidth), then joins its
  server's processor-shared set at the exact instant its upload completes, also mid-step.
- rewards are charged at dispatch: r_E = -alpha_E (p L / C + kappa eta f^2 L) and
  r_T = -alpha_T (own delay + delay added to the tasks running on that server), where both delays
  assume no further arrivals (RN; :func:`mec_env.cost_model.ps_own_and_added_s`), and the running
  tasks progress during the upload.
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from mec_env.cost_model import ps_own_and_added_s, shannon_rate_bps

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
_EPS_MBIT = 1e-9  # a task with less remaining work than this has finished

# Observation features per server row (index: meaning); see the env card for bounds.
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


def _ps_level(rem: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Service each job gets when ``capacity`` of processor-shared service is spread over jobs.

    Same result as :func:`mec_env.cost_model.ps_advance` (tests check it) but without a sort:
    the water level s solves sum_i min(w_i, s) = capacity, found by the fixed point
    s <- (capacity - sum of finished w) / (jobs left), which only increases and stops once the
    set of finishing jobs is stable (one pass when no job finishes, one more per wave).

    Args:
        rem: remaining work per job (last axis, 0 = no job), any unit.
        capacity: service available per row, same unit.

    Returns:
        The level s per row (``inf`` when every job finishes); remaining = max(rem - s, 0).
    """
    busy = rem > 0.0
    n = busy.sum(-1)
    level = capacity / np.maximum(n, 1)
    k_prev = np.zeros_like(n)
    while True:
        fin = busy & (rem <= level[..., None])
        k = fin.sum(-1)
        if np.array_equal(k, k_prev):
            return level
        left = n - k
        done = (rem * fin).sum(-1)
        level = np.where(left > 0, (capacity - done) / np.maximum(left, 1), np.inf)
        k_prev = k


class GMORLBatchedCore:
    """The dynamics of N independent GMORL worlds, stepped together with array operations.

    State (leading axis N = env; S = max_edges + 1 servers; K = T + 1 slots per server):

    - processor sharing in *virtual time*: ``v_mbit[N, S]`` is the service each running task of
      the server has received so far; a task admitted with work w gets the finish mark
      ``f_mbit = v + w`` and runs while ``f_mbit > v``. A step that finishes no task only moves v
      (O(N S)); rows where a task finishes solve the exact water level with :func:`_ps_level`.
    - uploads: ``upload_done_s[N, T + 2]`` (absolute time, inf = none), indexed by dispatch step.
    - arrivals: ``arrived_cum[N, T + 2]`` and the stream ``stream_mbit / stream_user[N, M]``.

    ``step`` contains no Python loop over envs, servers or tasks; its two small loops are over
    sub-step events (uploads completing within the step, usually 0-2) and over the fixed point of
    :func:`_ps_level` (usually 1-2 passes).
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
        channel: Literal["paper", "predecessor"] = "paper",
        episode_steps: int = EPISODE_STEPS,
    ) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if not isinstance(max_edges, (int, np.integer)) or max_edges < 1:
            raise ValueError(f"max_edges must be a positive int, got {max_edges!r}")
        if ranges not in RANGES:
            raise ValueError(f"ranges must be one of {sorted(RANGES)}, got {ranges!r}")
        if channel not in ("paper", "predecessor"):
            raise ValueError(f"channel must be 'paper' or 'predecessor', got {channel!r}")
        if not isinstance(episode_steps, (int, np.integer)) or episode_steps < 1:
            raise ValueError(f"episode_steps must be a positive int, got {episode_steps!r}")
        if not (np.isfinite(min_rate_bps) and min_rate_bps > 0):
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
            if value is not None and not (0.0 < value <= MAX_GHZ):
                raise ValueError(f"{name} must be in (0, {MAX_GHZ}] GHz, got {value!r}")
        self.cloud_ghz_range = box["cloud_ghz"] if cloud_ghz is None else (cloud_ghz, cloud_ghz)
        self.edge_ghz_range = box["edge_ghz"] if edge_ghz is None else (edge_ghz, edge_ghz)

        self.num_envs = n = int(num_envs)
        self.max_edges = int(max_edges)
        self.num_servers = s = self.max_edges + 1
        self.episode_steps = t = int(episode_steps)
        self.min_rate_bps = float(min_rate_bps)
        self.channel = channel
        self.obs_shape = (s, NUM_FEATURES)
        # Arrival stream capacity: mean lambda U T = 100 arrivals; P(Poisson(100) > 264) ~ 1e-40.
        self.stream_len = m = int(2 * ARRIVAL_RATE_PER_USER_HZ * NUM_USERS * DT_S * t) + 64

        self._ar = np.arange(n)
        self._server_ids = np.arange(s)
        # Configuration, drawn at reset.
        self.num_edges = np.zeros(n, np.int64)
        self.present = np.zeros((n, s), bool)
        self.freq_ghz = np.zeros((n, s))
        self.mu_mbit_s = np.zeros((n, s))  # service rate f / eta in Mbit/s
        self.exec_j_per_mbit = np.zeros((n, s))  # kappa eta f^2 per Mbit
        self.rate_bps = np.ones((n, s, NUM_USERS))
        self._rate_feat = np.zeros((n, s, NUM_USERS))
        self.mean_task_mbit = np.zeros(n)
        self.arrived_cum = np.zeros((n, t + 2), np.int64)
        self.stream_mbit = np.zeros((n, m))
        self.stream_user = np.zeros((n, m), np.int64)
        # Dynamic state.
        self.step_index = np.zeros(n, np.int64)
        self.dispatched = np.zeros(n, np.int64)
        self.task_mbit = np.zeros(n)
        self.task_user = np.zeros(n, np.int64)
        self.v_mbit = np.zeros((n, s))
        self.f_mbit = np.zeros((n, s, t + 1))
        self.fmin_mbit = np.full((n, s), np.inf)
        self.n_running = np.zeros((n, s), np.int64)
        self.n_uploading = np.zeros((n, s), np.int64)
        self.job_server = np.zeros((n, t + 2), np.int64)
        self.job_mbit = np.zeros((n, t + 2))
        self.upload_done_s = np.full((n, t + 2), np.inf)
        self._k_hi = 1  # slots [k_hi:] are free in every row
        # Outputs (overwritten in place each step).
        self.obs = np.zeros((n, *self.obs_shape), np.float32)
        self.reward = np.zeros((n, 2), np.float32)
        self.delay_s = np.zeros(n)
        self.energy_j = np.zeros(n)
        self._present_f = np.zeros((n, s))
        self._hist_base = ((self._ar[:, None] * s + self._server_ids) * (HIST_BINS + 1) + 1.0)[
            ..., None
        ]
        self._bins_total = n * s * (HIST_BINS + 1)

        high = np.ones(NUM_FEATURES, np.float32)
        high[FEATURES.index("cpu_freq")] = MAX_GHZ / 5.0
        high[len(FEATURES) :] = t / 10.0  # histogram counts / 10, at most T tasks
        self.obs_high = np.broadcast_to(high, self.obs_shape).copy()
        self.reward_low = self._reward_lower_bound()

    def _reward_lower_bound(self) -> np.ndarray:
        """Worst [r_T, r_E] from the clipping bounds: a 100 Mbit task at the rate floor on the
        slowest CPU behind T - 1 running tasks (delay), on the fastest CPU (energy)."""
        f_lo = min(self.cloud_ghz_range[0], self.edge_ghz_range[0])
        f_hi = max(self.cloud_ghz_range[1], self.edge_ghz_range[1])
        tx_max_s = TASK_MBIT_MAX * 1e6 / self.min_rate_bps
        work_max_s = TASK_MBIT_MAX * 1e6 * CYCLES_PER_BIT / (f_lo * 1e9)
        others = self.episode_steps - 1
        delay_max_s = tx_max_s + work_max_s * (
            1 + 2 * others
        )  # own <= tx + w (1 + n), added <= n w
        energy_max_j = (
            TX_POWER_W * tx_max_s + KAPPA * CYCLES_PER_BIT * (f_hi * 1e9) ** 2 * TASK_MBIT_MAX * 1e6
        )
        low = -np.array([ALPHA_T_PER_S * delay_max_s, ALPHA_E_PER_J * energy_max_j])
        return (low * (1 + 1e-6)).astype(np.float32)

    # --- reset -------------------------------------------------------------------------------
    def reset(self, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Draw a new world for the envs in ``mask`` (all when None) from ``rng``."""
        idx = self._ar if mask is None else np.flatnonzero(mask)
        k, s, t, m = len(idx), self.num_servers, self.episode_steps, self.stream_len
        if k == 0:
            return
        e_lo, e_hi = self.edge_range
        num_edges = rng.integers(e_lo, e_hi + 1, size=k)
        f0 = rng.uniform(*self.cloud_ghz_range, size=k)
        fe = rng.uniform(*self.edge_ghz_range, size=(k, self.max_edges))
        present = self._server_ids <= num_edges[:, None]
        freq = np.concatenate([f0[:, None], fe], axis=1) * present
        self.num_edges[idx] = num_edges
        self.present[idx] = present
        self._present_f[idx] = present
        self.freq_ghz[idx] = freq
        self.mu_mbit_s[idx] = freq * 1e9 / CYCLES_PER_BIT / 1e6
        self.exec_j_per_mbit[idx] = KAPPA * CYCLES_PER_BIT * (freq * 1e9) ** 2 * 1e6
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
        else:  # predecessor code: fixed -8 dB, and the normalised gain enters squared
            gain = (10.0 ** ((-SHADOWING_STD_DB - loss_db) / 10.0) * fading / NOISE_W) ** 2
        rate = np.maximum(
            shannon_rate_bps(BANDWIDTH_HZ, TX_POWER_W, gain, NOISE_W), self.min_rate_bps
        )
        self.rate_bps[idx] = rate
        self._rate_feat[idx] = np.clip((np.log10(rate) - 4.0) / 5.0, 0.0, 1.0) * present[..., None]

        # Arrival stream of the whole episode.
        counts = rng.poisson(arrivals_per_step, size=(k, t + 1))
        self.arrived_cum[idx, : t + 1] = np.minimum(np.cumsum(counts, axis=1), m)
        self.arrived_cum[idx, t + 1] = self.arrived_cum[idx, t]
        sizes = rng.exponential(1.0, size=(k, m)) * mean_mbit[:, None]
        self.stream_mbit[idx] = np.clip(sizes, TASK_MBIT_MIN, TASK_MBIT_MAX)
        self.stream_user[idx] = rng.integers(0, NUM_USERS, size=(k, m))

        # Empty servers, no uploads.
        self.step_index[idx] = 0
        self.dispatched[idx] = 0
        self.v_mbit[idx] = 0.0
        self.f_mbit[idx] = 0.0
        self.fmin_mbit[idx] = np.inf
        self.n_running[idx] = 0
        self.n_uploading[idx] = 0
        self.upload_done_s[idx] = np.inf
        self.job_mbit[idx] = 0.0
        if k == self.num_envs:
            self._k_hi = 1
        self.reward[idx] = 0.0
        self.delay_s[idx] = 0.0
        self.energy_j[idx] = 0.0

        obs = self.obs
        obs[idx, :, FEATURES.index("present")] = present
        obs[idx, 0, FEATURES.index("is_cloud")] = 1.0
        obs[idx, :, FEATURES.index("cpu_freq")] = freq / 5.0
        obs[idx, :, FEATURES.index("num_edges")] = (num_edges / self.max_edges)[:, None] * present
        self._next_task(idx)
        self._observe()

    # --- step --------------------------------------------------------------------------------
    def step(self, actions: np.ndarray) -> np.ndarray:
        """Dispatch each env's current task to ``actions[i]`` (valid, unmasked) and advance
        every world by one step. Fills ``obs``, ``reward``, ``delay_s``, ``energy_j`` in place.

        Returns:
            truncated, bool array (N,): the episode has reached T steps.
        """
        ar, a = self._ar, actions
        size = self.task_mbit
        rate = self.rate_bps[ar, a, self.task_user]
        tx_s = size * 1e6 / rate
        mu = self.mu_mbit_s[ar, a]
        energy = TX_POWER_W * tx_s + self.exec_j_per_mbit[ar, a] * size
        # Delay: running tasks on the target progress during the upload, then the new task
        # joins them (RN: own delay + delay added to the tasks already running).
        rem = self.f_mbit[ar, a, : self._k_hi] - (self.v_mbit[ar, a] + _EPS_MBIT)[:, None]
        np.maximum(rem, 0.0, out=rem)
        level = _ps_level(rem, tx_s * mu)
        rem -= level[:, None]
        np.maximum(rem, 0.0, out=rem)
        own, added = ps_own_and_added_s(rem, size)
        delay = tx_s + (own + added) / mu
        self.delay_s[:] = delay
        self.energy_j[:] = energy
        self.reward[:, 0] = -ALPHA_T_PER_S * delay
        self.reward[:, 1] = -ALPHA_E_PER_J * energy

        # Start the upload (an empty task starts nothing).
        slot = self.step_index
        real = size > 0.0
        now_s = slot * DT_S
        self.job_server[ar, slot] = a
        self.job_mbit[ar, slot] = size
        self.upload_done_s[ar, slot] = np.where(real, now_s + tx_s, np.inf)
        self.n_uploading[ar, a] += real

        self._run_until(now_s + DT_S, now_s)
        self.step_index += 1
        self._next_task(ar)
        self._observe()
        return self.step_index >= self.episode_steps

    def _run_until(self, end_s: np.ndarray, now_s: np.ndarray) -> None:
        """Advance every server to ``end_s``, admitting uploads at their completion instants."""
        up, ar = self.upload_done_s, self._ar
        cur = now_s
        while True:  # one pass per upload completing inside the step (usually 0-2)
            j = up.argmin(1)
            t_up = up[ar, j]
            arriving = t_up <= end_s
            if not arriving.any():
                self._serve(end_s - cur)
                return
            target = np.where(arriving, t_up, end_s)
            self._serve(target - cur)
            cur = target
            self._admit(np.flatnonzero(arriving), j[arriving])

    def _serve(self, dt_s: np.ndarray) -> None:
        """Processor sharing on every server for ``dt_s`` (per env), no arrivals."""
        cap = dt_s[:, None] * self.mu_mbit_s
        share = cap / np.maximum(self.n_running, 1)
        slow = self.fmin_mbit - self.v_mbit <= share + _EPS_MBIT  # a task finishes
        self.v_mbit += share
        if not slow.any():
            return
        e, srv = np.nonzero(slow)
        v0 = self.v_mbit[e, srv] - share[e, srv]
        f = self.f_mbit[e, srv, : self._k_hi]
        rem = f - (v0 + _EPS_MBIT)[:, None]
        np.maximum(rem, 0.0, out=rem)
        level = np.minimum(_ps_level(rem, cap[e, srv]), rem.max(-1))
        v1 = v0 + level
        left = f > (v1 + _EPS_MBIT)[:, None]
        self.v_mbit[e, srv] = v1
        self.n_running[e, srv] = left.sum(-1)
        self.fmin_mbit[e, srv] = np.where(left, f, np.inf).min(-1)

    def _admit(self, e: np.ndarray, j: np.ndarray) -> None:
        """Task ``j`` of env ``e`` (one per env) has uploaded: it joins its server now."""
        srv = self.job_server[e, j]
        v = self.v_mbit[e, srv]
        k_hi = self._k_hi
        free = self.f_mbit[e, srv, : k_hi + 1] <= (v + _EPS_MBIT)[:, None]
        slot = free.argmax(1)
        finish = v + self.job_mbit[e, j]
        self.f_mbit[e, srv, slot] = finish
        self.fmin_mbit[e, srv] = np.minimum(self.fmin_mbit[e, srv], finish)
        self.n_running[e, srv] += 1
        self.n_uploading[e, srv] -= 1
        self.upload_done_s[e, j] = np.inf
        self._k_hi = max(k_hi, int(slot.max()) + 1)

    def _next_task(self, idx: np.ndarray) -> None:
        """Present the head of the FIFO queue of envs ``idx`` (an empty task when none waits)."""
        t, done = self.step_index[idx], self.dispatched[idx]
        has = (self.arrived_cum[idx, t] > done) & (t < self.episode_steps)
        head = np.minimum(done, self.stream_len - 1)
        self.task_mbit[idx] = np.where(has, self.stream_mbit[idx, head], 0.0)
        self.task_user[idx] = np.where(has, self.stream_user[idx, head], 0)
        self.dispatched[idx] = done + has

    @property
    def queue_length(self) -> np.ndarray:
        """Tasks waiting behind the current one."""
        return self.arrived_cum[self._ar, self.step_index] - self.dispatched

    def _observe(self) -> None:
        obs, ar, t_max = self.obs, self._ar, self.episode_steps
        obs[..., 2] = (self.task_mbit / TASK_MBIT_MAX)[:, None] * self._present_f
        obs[..., 3] = self._rate_feat[ar, :, self.task_user]
        obs[..., 5] = self.n_running * (1.0 / t_max)
        obs[..., 6] = self.n_uploading * (1.0 / t_max)
        obs[..., 8] = (self.step_index / t_max)[:, None] * self._present_f
        # Histogram of remaining work (1 Mbit bins, last bin open): bin 0 of each row of
        # HIST_BINS + 1 catches the idle slots and is dropped.
        rem = self.f_mbit[:, :, : self._k_hi] - (self.v_mbit + _EPS_MBIT)[..., None]
        np.clip(rem / HIST_BIN_MBIT, -0.5, HIST_BINS - 0.5, out=rem)
        rem += self._hist_base
        counts = np.bincount(rem.astype(np.intp).ravel(), minlength=self._bins_total)
        obs[..., len(FEATURES) :] = counts.reshape(self.num_envs, self.num_servers, -1)[..., 1:]
        obs[..., len(FEATURES) :] *= 0.1


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

    ``Box(0, high, (max_edges + 1, 69), float32)``: one row per server (row 0 = cloud, rows > E
    all zero), a permutation-invariant padded encoding:

    | index | feature | value | bounds |
    |---|---|---|---|
    | 0 | present | 1 for the cloud and edges 1..E | [0, 1] |
    | 1 | is_cloud | 1 on row 0 | [0, 1] |
    | 2 | task_size | current task size / 100 Mbit (0: no task waiting) | [0, 1] |
    | 3 | rate | (log10(C / bit/s) - 4) / 5 for the task's user to this server, clipped | [0, 1] |
    | 4 | cpu_freq | f / 5 GHz | [0, 2] |
    | 5 | num_running | tasks executing on the server / T | [0, 1] |
    | 6 | num_uploading | tasks uploading to the server / T | [0, 1] |
    | 7 | num_edges | E / max_edges | [0, 1] |
    | 8 | time | steps taken / T | [0, 1] |
    | 9-68 | histogram | running tasks by remaining execution size, 1 Mbit bins (last: >= 59), count / 10 | [0, T / 10] |

    ## Rewards

    A float32 vector ``[r_T, r_E]``, charged when the task is dispatched:
    ``r_T = -0.01 * (own delay + delay added to the tasks already running on that server)`` in s,
    own delay = upload L / C + processor-sharing completion, both assuming no further arrivals
    (the running tasks progress during the upload); ``r_E = -50 * (p L / C + kappa eta f^2 L)``
    in J, kappa = 5e-31. An empty task gives [0, 0]. :attr:`reward_space` bounds every reward
    (worst case: a 100 Mbit task at the rate floor behind T - 1 tasks on the slowest CPU);
    ``info["delay_s"]`` and ``info["energy_j"]`` hold the unscaled values.

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
    ranges), ``invalid_action`` ("raise" | "fallback"), ``min_rate_bps`` (1e4),
    ``channel`` ("paper" | "predecessor": the predecessor code's much faster links),
    ``episode_steps`` (100).

    ## Version history

    - v0: first version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        render_mode: str | None = None,
        *,
        invalid_action: Literal["raise", "fallback"] = "raise",
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

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._core.reset(self.np_random)
        self._started, self._ended, self._last = True, False, None
        return self._core.obs[0].copy(), self._info()

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
        return self._core.obs[0].copy(), self._core.reward[0].copy(), False, truncated, info

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
        remaining = np.maximum(core.f_mbit[0, :, : core._k_hi] - core.v_mbit[0, :, None], 0).sum(1)
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
        invalid_action: Literal["raise", "fallback"] = "raise",
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
        self._started = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        mask = None if not options else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask, bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"reset_mask must have shape ({self.num_envs},), got {mask.shape}")
            if not self._started and not mask.all():
                raise ValueError("the first reset must reset every env (reset_mask all True)")
        self._core.reset(self.np_random, mask)
        self._autoreset[slice(None) if mask is None else mask] = False
        self._started = True
        return self._core.obs.copy(), self._info(np.zeros(self.num_envs, bool))

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        core, n = self._core, self.num_envs
        acts = np.asarray(actions)
        if acts.shape != (n,) or acts.dtype.kind not in "iu":
            raise ValueError(f"actions must be {n} integers, got {actions!r}")
        bad = (acts < 0) | (acts >= core.num_servers)
        if bad.any():
            raise ValueError(
                f"action {acts[bad][0]!r} is outside Discrete({core.num_servers}) (env {np.flatnonzero(bad)[0]})"
            )
        done = self._autoreset
        masked = ~core.present[core._ar, acts] & ~done
        if masked.any():
            if self.invalid_action == "raise":
                i = int(np.flatnonzero(masked)[0])
                mask = core.present[i].astype(int).tolist()
                raise ValueError(f"action {int(acts[i])} of env {i} is masked; action_mask={mask}")
            acts = np.where(masked, 0, acts)
        truncated = core.step(np.where(done, 0, acts).astype(np.int64)).copy()
        rewards = core.reward.copy()
        if done.any():  # NEXT_STEP autoreset: ended envs restart, their action is ignored
            core.reset(self.np_random, done)
            rewards[done] = 0.0
            truncated[done] = False
        self._autoreset = truncated.copy()
        info = self._info(masked)
        info["delay_s"] = np.where(done, 0.0, core.delay_s)
        info["energy_j"] = np.where(done, 0.0, core.energy_j)
        info["_delay_s"] = info["_energy_j"] = ~done
        return core.obs.copy(), rewards, np.zeros(n, bool), truncated, info

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
