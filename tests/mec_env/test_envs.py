"""Environment-level tests for every registered mec_env environment.

Covers Gymnasium's and SB3's env checkers, registration (``"mec_env:<id>"`` in a fresh process),
spaces held over long random rollouts, the vector env (NEXT_STEP autoreset), the errors raised for
out-of-space and masked actions, rejection when no target can take a request, and rendering.
Processor sharing itself is tested elsewhere.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env

import mec_env
from mec_env.core import ACTION_PARTS, COST_NAMES, OffloadCore
from mec_env.envs.llm_offload import LLMOffloadEnv, LLMOffloadVectorEnv
from mec_env.wrappers import LinearScalarization

# the rewards are vectors: Gymnasium's passive checker warns about that on the first step
pytestmark = pytest.mark.filterwarnings("ignore:.*reward returned by `step\\(\\)`:UserWarning")

REPO = Path(__file__).resolve().parents[2]
DISCRETE = "mec_env/LLMOffload-v0"
CONTINUOUS = "mec_env/LLMOffloadContinuous-v0"
GMORL = "mec_env/GMORLOffload-v0"
LLM_IDS = (DISCRETE, CONTINUOUS)
PROGRESS = OffloadCore.REQUEST_FEATURES.index("episode_progress")
BATTERY = OffloadCore.REQUEST_FEATURES.index("battery_fraction")
LOCAL_OPEN = OffloadCore.REQUEST_FEATURES.index("local_open")
LOCAL_BUSY = OffloadCore.REQUEST_FEATURES.index("local_busy_fraction")
BUSY = OffloadCore.SERVER_FEATURES_HEAD.index("busy_fraction")
SERVER_OPEN = OffloadCore.SERVER_FEATURES_HEAD.index("open")


def _importable(env_id: str) -> str | None:
    """None when the env's entry-point module imports, else the reason it does not."""
    module = gym.spec(env_id).entry_point.split(":")[0]
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 (any import failure means: not written yet)
        return f"{module} does not import yet: {type(err).__name__}: {err}"
    return None


def env_params(ids=mec_env.ENV_IDS):
    """pytest params over env ids; ids whose module does not import are skipped."""
    out = []
    for env_id in ids:
        reason = _importable(env_id)
        marks = [pytest.mark.skip(reason=reason)] if reason is not None else []
        out.append(pytest.param(env_id, marks=marks, id=env_id.split("/")[1]))
    return out


def make(env_id: str, **kwargs) -> gym.Env:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passive checker warns about the vector reward
        return gym.make(env_id, **kwargs)


def valid_action(env: gym.Env, info: dict, rng: np.random.Generator):
    """A uniformly random action among the open entries of ``info["action_mask"]`` (each
    MultiDiscrete part sampled independently from its own mask); Box: ``action_space.sample()``."""
    space = env.action_space
    if isinstance(space, spaces.MultiDiscrete):
        mask, off = info["action_mask"], env.unwrapped.core.mask_offsets
        parts = []
        for p in range(len(space.nvec)):
            open_ = np.flatnonzero(mask[off[p] : off[p + 1]])
            parts.append(open_[rng.integers(open_.size)])
        return np.array(parts, dtype=np.int64)
    if isinstance(space, spaces.Discrete):
        open_ = np.flatnonzero(info["action_mask"])
        return int(open_[rng.integers(open_.size)])
    return space.sample()


def assert_in_box(values: np.ndarray, box: spaces.Box, what: str) -> None:
    """Every row of ``values`` (stacked samples) lies in ``box``: dtype, shape, finite, bounds."""
    assert values.dtype == box.dtype, f"{what}: dtype {values.dtype} != {box.dtype}"
    assert values.shape[1:] == box.shape, f"{what}: shape {values.shape[1:]} != {box.shape}"
    assert np.all(np.isfinite(values)), f"{what}: NaN or inf"
    low_ok = values >= box.low
    high_ok = values <= box.high
    bad = ~(low_ok & high_ok)
    if bad.any():
        i = np.argwhere(bad)[0]
        raise AssertionError(
            f"{what}: sample {i[0]} entry {tuple(i[1:])} = {values[tuple(i)]} outside "
            f"[{box.low[tuple(i[1:])]}, {box.high[tuple(i[1:])]}]"
        )
    # the bulk check above is what Box.contains does; spot-check contains itself too
    for row in (values[0], values[-1]):
        assert box.contains(row), what


def rollout(env: gym.Env, steps: int, seed: int, policy) -> dict[str, np.ndarray]:
    """Step ``env`` with ``policy(info, rng)``, resetting at truncation; stack what came back."""
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    out: dict[str, list] = {"obs": [obs], "reward": [], "fallback": [], "plan": [], "costs": []}
    out["masked"], out["rejected"] = [], []
    for _ in range(steps):
        action = policy(info, rng)
        out["masked"].append(_masked_parts(env, info, action))
        obs, reward, terminated, truncated, info = env.step(action)
        assert terminated is False
        out["obs"].append(obs)
        out["reward"].append(reward)
        out["fallback"].append(np.atleast_1d(info["fallback"]))
        out["plan"].append(np.atleast_1d(info.get("plan", action)))
        out["rejected"].append(info.get("rejected", False))
        costs = info.get("costs")
        if costs is None:  # GMORL: unscaled delay and energy
            costs = np.array([info["delay_s"], info["energy_j"]])
        out["costs"].append(costs)
        if truncated:
            obs, info = env.reset()
            out["obs"].append(obs)
    return {k: np.stack(v) for k, v in out.items()}


def _masked_parts(env: gym.Env, info: dict, action) -> np.ndarray:
    space = env.action_space
    if isinstance(space, spaces.MultiDiscrete):
        off = env.unwrapped.core.mask_offsets
        return ~info["action_mask"][off[:-1] + np.asarray(action)]
    if isinstance(space, spaces.Discrete):
        return np.array([not info["action_mask"][action]])
    return np.zeros(1, dtype=bool)


# ---------------------------------------------------------------------------------------------
# Checkers, registration, reward spaces
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", env_params())
def test_gymnasium_check_env(env_id):
    env = make(env_id).unwrapped
    env.action_space.seed(0)  # the checker samples actions: make any failure reproducible
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vector rewards: the checker warns, which is fine
        gym_check_env(env)


@pytest.mark.parametrize("env_id", env_params())
def test_sb3_check_env(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = LinearScalarization(make(env_id))
    env.reset(seed=0)  # SB3's checker resets without a seed: fix the world it sees
    env.action_space.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(env)


@pytest.mark.parametrize("env_id", env_params((GMORL,)))
def test_checkers_pass_for_gmorl_with_fallback(env_id):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(make(env_id, invalid_action="fallback").unwrapped)
        sb3_check_env(LinearScalarization(make(env_id, invalid_action="fallback")))


@pytest.mark.parametrize("env_id", env_params())
def test_module_prefixed_id_resolves_in_fresh_process(env_id):
    script = f"""
import sys
import gymnasium as gym
assert "mec_env" not in sys.modules
env = gym.make({"mec_env:" + env_id!r})
obs, info = env.reset(seed=0)
assert env.observation_space.contains(obs)
print("ok", type(env.unwrapped).__name__, env.spec.id)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "ok"
    assert proc.stdout.split()[-1] == env_id


@pytest.mark.parametrize("env_id", env_params())
def test_reward_space_and_dim(env_id):
    env = make(env_id)
    u = env.unwrapped
    assert isinstance(u.reward_space, spaces.Box)
    assert isinstance(u.reward_dim, int) and u.reward_dim >= 1
    assert u.reward_space.shape == (u.reward_dim,)
    assert u.reward_space.dtype == np.float32
    assert np.all(u.reward_space.high <= 0) and np.all(np.isfinite(u.reward_space.low))
    _, info = env.reset(seed=0)
    env.action_space.seed(0)
    _, reward, _, _, _ = env.step(valid_action(env, info, np.random.default_rng(0)))
    assert isinstance(reward, np.ndarray)
    assert reward.dtype == np.float32 and reward.shape == (u.reward_dim,)


def test_reward_dim_follows_objectives():
    data = mec_env.load_scenario("default").to_dict()
    data["objectives"] = {
        "names": ["accuracy", "cost", "latency", "energy"],
        "return_low": [-1.0, -10.0, -5000.0, -2e5],
        "return_high": [0.0, 0.0, 0.0, 0.0],
        "reference_point": [-0.1, -0.1, -0.1, -0.1],
    }
    env = LLMOffloadEnv(scenario=data)
    assert env.reward_dim == 4 and env.reward_space.shape == (4,)
    assert env.objective_names == ("accuracy", "cost", "latency", "energy")
    _, info = env.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(50):
        _, reward, _, _, info = env.step(valid_action(env, info, rng))
        # the reward is the negated costs, reordered like the objectives
        order = [
            COST_NAMES.index(n) for n in ("accuracy_loss", "cost_usd", "latency_s", "energy_j")
        ]
        np.testing.assert_allclose(reward, -info["costs"][order].astype(np.float32), rtol=1e-6)
        assert env.reward_space.contains(reward)


# ---------------------------------------------------------------------------------------------
# Long random rollouts: spaces hold
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", env_params())
def test_random_valid_steps_stay_in_spaces(env_id):
    env = make(env_id)
    u = env.unwrapped
    steps = 10_000
    out = rollout(env, steps, seed=7, policy=lambda info, rng: valid_action(env, info, rng))
    assert out["reward"].shape == (steps, u.reward_dim)
    assert_in_box(out["obs"], env.observation_space, "observation")
    assert_in_box(out["reward"], u.reward_space, "reward")
    assert np.all(np.isfinite(out["costs"])) and np.all(out["costs"] >= 0)
    if isinstance(env.action_space, spaces.MultiDiscrete):
        # The masks are factorised (a part is open when it is feasible with at least one open
        # target), so a combination of individually open parts can still need a fallback: the
        # tier and policy of the chosen target, and the split when the target is the device
        # itself (local execution has only split 0, yet the split mask opens the splits the
        # servers allow). A sampled open target is never replaced, and a split only with the
        # local target.
        fb, plan = out["fallback"], out["plan"]
        assert not fb[:, 0].any(), "an open target fell back"
        assert not (fb[:, 1] & (plan[:, 0] != 0)).any(), "a split fell back on a server target"
    elif isinstance(env.action_space, spaces.Discrete):
        assert not out["fallback"].any()


@pytest.mark.parametrize("env_id", env_params())
def test_random_unmasked_steps_stay_in_spaces(env_id):
    kwargs = {"invalid_action": "fallback"} if env_id == GMORL else {}
    env = make(env_id, **kwargs)
    u = env.unwrapped
    space = env.action_space
    if isinstance(space, spaces.Box):
        # corners and zeros push the knobs to their extremes (tx power floor, lowest frequency)
        def policy(info, rng):
            return rng.choice(np.array([-1.0, 0.0, 1.0], np.float32), size=space.shape)
    else:

        def policy(info, rng):
            return space.sample()

    out = rollout(env, 2_000, seed=11, policy=policy)
    assert_in_box(out["obs"], env.observation_space, "observation")
    assert_in_box(out["reward"], u.reward_space, "reward")
    assert np.all(np.isfinite(out["costs"])) and np.all(out["costs"] >= 0)
    if not isinstance(space, spaces.Box):
        assert out["masked"].any(), "uniform actions should hit some masked entries"
        # every masked part is replaced and flagged (unless no target could take the request:
        # then the plan is the rejection and nothing is flagged)
        masked = out["masked"] & ~out["rejected"][:, None]
        assert np.all(out["fallback"][masked]), "a masked part ran without a fallback flag"


@pytest.mark.parametrize("preset", mec_env.list_scenarios())
@pytest.mark.parametrize("env_id", LLM_IDS)
def test_every_preset_steps_inside_spaces(preset, env_id):
    env = make(env_id, scenario=preset)
    u = env.unwrapped
    assert u.scenario.name == preset or u.scenario == mec_env.load_scenario(preset)
    assert u.reward_dim == len(u.scenario.objectives.names)
    valid = rollout(env, 2_000, seed=13, policy=lambda info, rng: valid_action(env, info, rng))
    anything = rollout(env, 500, seed=14, policy=lambda info, rng: env.action_space.sample())
    for out in (valid, anything):
        assert_in_box(out["obs"], env.observation_space, "observation")
        assert_in_box(out["reward"], u.reward_space, "reward")
        assert np.all(np.isfinite(out["costs"])) and np.all(out["costs"] >= 0)
    if env_id == DISCRETE:
        assert not valid["fallback"][:, 0].any()


def test_scenario_accepts_a_yaml_path():
    path = Path(mec_env.__file__).parent / "presets" / "default.yaml"
    env = make(DISCRETE, scenario=str(path))
    assert env.unwrapped.scenario == mec_env.load_scenario("default")


def test_masked_actions_still_hold_spaces_on_the_vector_env():
    env = gym.make_vec(DISCRETE, num_envs=4)
    env.action_space.seed(3)
    obs, _ = env.reset(seed=3)
    for _ in range(200):
        obs, reward, _, _, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert all(env.reward_space.contains(r) for r in reward)


# ---------------------------------------------------------------------------------------------
# Vector env
# ---------------------------------------------------------------------------------------------


def test_make_vec_returns_native_vector_env():
    env = gym.make_vec(DISCRETE, num_envs=3)
    assert isinstance(env, LLMOffloadVectorEnv)
    assert env.num_envs == 3
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def test_vector_env_shapes_and_next_step_autoreset():
    n = 3
    env = gym.make_vec(DISCRETE, num_envs=n)
    T = env.scenario.episode_requests
    nvec = env.single_action_space.nvec
    obs, info = env.reset(seed=5)
    assert obs.shape == (n, *env.single_observation_space.shape)
    assert env.action_masks().shape == (n, int(nvec.sum()))
    assert env.action_masks().dtype == bool
    np.testing.assert_array_equal(info["action_mask"], env.action_masks())
    rng = np.random.default_rng(5)
    _, ns, per = env.core.observation_size()
    base = len(OffloadCore.REQUEST_FEATURES)
    prev_truncated = np.zeros(n, dtype=bool)
    truncations = []
    for t in range(2 * T + 3):
        masks = env.action_masks()
        off = env.core.mask_offsets
        actions = np.array(
            [
                [rng.choice(np.flatnonzero(masks[i, off[p] : off[p + 1]])) for p in range(4)]
                for i in range(n)
            ]
        )
        obs, reward, terminated, truncated, info = env.step(actions)
        assert reward.shape == (n, env.reward_dim) and reward.dtype == np.float32
        assert obs.shape == (n, *env.single_observation_space.shape)
        assert terminated.shape == truncated.shape == (n,)
        assert not terminated.any()
        assert env.action_masks().shape == (n, int(nvec.sum()))
        for i in range(n):
            assert env.single_observation_space.contains(obs[i])
            assert env.reward_space.contains(reward[i])
        for i in np.flatnonzero(prev_truncated):
            # NEXT_STEP: the step after a truncation resets that sub-env
            assert reward[i].tolist() == [0.0] * env.reward_dim
            assert not truncated[i]
            assert obs[i, PROGRESS] == 0.0  # a fresh episode: nothing decided yet
            assert obs[i, BATTERY] == 1.0  # full batteries
            assert obs[i, LOCAL_BUSY] == 0.0
            busy = obs[i, base:].reshape(ns, per)[:, BUSY]
            assert np.all(busy == 0.0), "servers start empty"
        if truncated.any():
            truncations.append(t)
        prev_truncated = truncated.copy()
    # all sub-envs start together: T decisions, then one reset step, then T more
    assert truncations == [T - 1, 2 * T]


@pytest.mark.parametrize("num_envs", [0, -1, True, False, 2.0, "4", None])
def test_vector_env_rejects_bad_num_envs(num_envs):
    with pytest.raises(ValueError, match="num_envs"):
        gym.make_vec(DISCRETE, num_envs=num_envs)


def test_vector_env_action_errors():
    env = gym.make_vec(DISCRETE, num_envs=2)
    env.reset(seed=0)
    nvec = env.single_action_space.nvec
    with pytest.raises(ValueError, match="rows"):
        env.step(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="rows"):
        env.step(np.zeros(4, dtype=np.int64))
    bad = np.zeros((2, 4), dtype=np.int64)
    bad[1, 2] = nvec[2]
    with pytest.raises(ValueError, match=rf"kv_tier.*{nvec[2]}"):
        env.step(bad)


def test_vector_env_raise_mode_rejects_masked_actions():
    env = gym.make_vec(DISCRETE, num_envs=2, invalid_action="raise")
    env.reset(seed=0)
    actions = np.zeros((2, 4), dtype=np.int64)
    actions[:, 0] = env.core.max_servers  # a padded server slot: never open
    assert not env.action_masks()[:, env.core.max_servers].any()
    with pytest.raises(ValueError, match="masked"):
        env.step(actions)


# ---------------------------------------------------------------------------------------------
# Out-of-space actions
# ---------------------------------------------------------------------------------------------


def _discrete_env(**kwargs) -> gym.Env:
    env = make(DISCRETE, **kwargs)
    env.reset(seed=0)
    return env


def out_of_range_params():
    out = []
    for mode in ("fallback", "raise"):
        for part in range(4):
            for where in ("high", "negative"):
                out.append(
                    pytest.param(mode, part, where, id=f"{mode}-{ACTION_PARTS[part]}-{where}")
                )
    return out


@pytest.mark.parametrize("mode, part, where", out_of_range_params())
def test_discrete_out_of_range_part_raises_naming_part_and_value(mode, part, where):
    env = _discrete_env(invalid_action=mode)
    nvec = env.action_space.nvec
    action = np.array(consistent_plan(env.unwrapped.core), dtype=np.int64)
    action[part] = nvec[part] if where == "high" else -1
    with pytest.raises(ValueError) as err:
        env.step(action)
    msg = str(err.value)
    assert ACTION_PARTS[part] in msg and str(action[part]) in msg


def vector_out_of_range_params():
    out = []
    for mode in ("fallback", "raise"):
        for part in range(4):
            for where in ("high", "negative"):
                out.append(
                    pytest.param(mode, part, where, id=f"{mode}-{ACTION_PARTS[part]}-{where}")
                )
    return out


@pytest.mark.parametrize("mode, part, where", vector_out_of_range_params())
def test_vector_out_of_range_part_raises_naming_part_and_value(mode, part, where):
    n = 2
    env = gym.make_vec(DISCRETE, num_envs=n, invalid_action=mode)
    env.reset(seed=0)
    nvec = env.single_action_space.nvec
    actions = np.array([consistent_plan(env.core, env=i) for i in range(n)], dtype=np.int64)
    actions[1, part] = nvec[part] if where == "high" else -1
    with pytest.raises(ValueError) as err:
        env.step(actions)
    msg = str(err.value)
    assert ACTION_PARTS[part] in msg and str(actions[1, part]) in msg


@pytest.mark.parametrize(
    "action, fragment",
    [
        ([0.5, 0, 0, 0], "0.5"),
        (np.array([0, 1.5, 0, 0]), "1.5"),
        ([np.nan, 0, 0, 0], "nan"),
        ([0, 0, 0], "shape"),
        ([0, 0, 0, 0, 0], "shape"),
        (np.zeros((4, 1), dtype=np.int64), "shape"),
        (np.zeros((1, 1, 4), dtype=np.int64), "shape"),
        (np.array([True, False, False, False]), "integers"),
        ("target", "integers"),
    ],
)
def test_discrete_malformed_action_raises(action, fragment):
    env = _discrete_env()
    with pytest.raises(ValueError, match=fragment):
        env.step(action)


def test_discrete_single_env_rejects_one_row_batch():
    env = _discrete_env()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((1, 4), dtype=np.int64))


def test_discrete_single_env_rejects_multi_row_batch_in_subprocess():
    # run apart: before this was checked, the 1-env numba kernel read past its buffers and the
    # process segfaulted
    script = """
import numpy as np
from mec_env.envs.llm_offload import LLMOffloadEnv
env = LLMOffloadEnv()
env.reset(seed=0)
try:
    env.step(np.zeros((2, 4), dtype=np.int64))
except ValueError as err:
    print("raised", err)
else:
    print("accepted")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("raised"), proc.stdout


@pytest.mark.parametrize(
    "make_action, fragment",
    [
        (lambda n: np.full(n, 1.5, np.float32), r"\[-1, 1\].*1\.5"),
        (lambda n: np.full(n, -1.01, np.float32), r"\[-1, 1\]"),
        (lambda n: np.where(np.arange(n) == 3, 2.0, 0.0), r"action\[3\].*2\.0"),
        (lambda n: np.full(n, np.nan, np.float32), "finite"),
        (lambda n: np.full(n, np.inf, np.float32), "finite"),
        (lambda n: np.zeros(n + 1, np.float32), "shape"),
        (lambda n: np.zeros(n - 1, np.float32), "shape"),
        (lambda n: np.zeros((1, n), np.float32), "shape"),
    ],
)
def test_continuous_rejects_bad_actions(make_action, fragment):
    env = make(CONTINUOUS)
    env.reset(seed=0)
    n = env.action_space.shape[0]
    with pytest.raises(ValueError, match=fragment):
        env.step(make_action(n))


def test_continuous_accepts_bounds_exactly():
    env = make(CONTINUOUS)
    env.reset(seed=0)
    n = env.action_space.shape[0]
    for value in (-1.0, 1.0):
        obs, reward, _, _, _ = env.step(np.full(n, value, np.float32))
        assert env.observation_space.contains(obs)
        assert env.unwrapped.reward_space.contains(reward)


def test_continuous_never_falls_back():
    env = make(CONTINUOUS)
    out = rollout(env, 500, seed=2, policy=lambda info, rng: env.action_space.sample())
    assert not out["fallback"].any(), out["fallback"].sum(axis=0)


@pytest.mark.parametrize("env_id", env_params((GMORL,)))
@pytest.mark.parametrize("action", [11, -1, 0.5, 1.0, True, np.array([1]), "0"])
def test_gmorl_rejects_out_of_space_actions(env_id, action):
    env = make(env_id)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="Discrete|integer"):
        env.step(action)


# ---------------------------------------------------------------------------------------------
# Masked actions: documented fallback, or ValueError with invalid_action="raise"
# ---------------------------------------------------------------------------------------------


def consistent_plan(core: OffloadCore, target: int | None = None, env: int = 0) -> list[int]:
    """An action whose four parts are jointly feasible for sub-env ``env`` (its first open
    target if ``target`` is None)."""
    targets = np.flatnonzero(core.part_mask(0)[env]) if target is None else [target]
    for g in targets:
        policies = np.flatnonzero(core.ok_p[env, g])
        for s in range(core.num_splits):
            for k in range(core.ok_st.shape[3]):
                if core.ok_st[env, g, s, k] and policies.size:
                    return [int(g), s, k, int(policies[0])]
    raise AssertionError("no consistent plan")


def test_invalid_action_mode_is_validated():
    with pytest.raises(ValueError, match="invalid_action"):
        make(DISCRETE, invalid_action="bogus")
    with pytest.raises(ValueError, match="invalid_action"):
        LLMOffloadVectorEnv(2, invalid_action="bogus")


@pytest.mark.parametrize("slot", [5, 6, 8])
def test_padded_server_target_falls_back_to_first_open_target(slot):
    env = _discrete_env()
    core = env.unwrapped.core
    assert len(env.unwrapped.scenario.servers) < slot <= core.max_servers
    assert not core.part_mask(0)[0][slot]
    first = int(np.flatnonzero(core.part_mask(0)[0])[0])
    plan = consistent_plan(core, first)
    obs, reward, _, _, info = env.step([slot, *plan[1:]])
    assert info["fallback"].tolist() == [True, False, False, False]
    assert info["plan"].tolist() == plan
    assert env.observation_space.contains(obs)
    assert env.unwrapped.reward_space.contains(reward)


def test_padded_server_target_raises_in_raise_mode():
    env = _discrete_env(invalid_action="raise")
    core = env.unwrapped.core
    plan = consistent_plan(core)
    slot = core.max_servers
    with pytest.raises(ValueError, match=rf"target.*{slot}.*masked"):
        env.step([slot, *plan[1:]])
    # the env is unchanged: the consistent plan still steps without any fallback
    _, _, _, _, info = env.step(plan)
    assert not info["fallback"].any()


def _reset_to_dense_request(env) -> None:
    u = env.unwrapped
    for seed in range(100):
        env.reset(seed=seed)
        if u.scenario.models[int(u.core.req[0, 1])].kind == "dense":
            return
    raise AssertionError("no dense request in 100 seeds")


def test_dense_model_expert_policy_falls_back():
    env = make(DISCRETE)
    _reset_to_dense_request(env)
    core = env.unwrapped.core
    assert core.part_mask(3)[0].tolist() == [True, False, False, False, False]
    plan = consistent_plan(core)
    obs, reward, _, _, info = env.step([*plan[:3], 3])
    assert info["fallback"].tolist() == [False, False, False, True]
    assert info["plan"].tolist() == [*plan[:3], 0]  # the first allowed policy
    assert not info["rejected"]
    assert env.observation_space.contains(obs)


def test_dense_model_expert_policy_raises_in_raise_mode():
    env = make(DISCRETE, invalid_action="raise")
    _reset_to_dense_request(env)
    plan = consistent_plan(env.unwrapped.core)
    with pytest.raises(ValueError, match=r"expert_policy.*3.*masked"):
        env.step([*plan[:3], 3])


def test_raise_mode_accepts_every_valid_sampled_action():
    env = make(DISCRETE, invalid_action="raise")
    _, info = env.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(300):
        _, _, _, truncated, info = env.step(valid_action(env, info, rng))
        if truncated:
            _, info = env.reset()


def test_action_masks_match_info_and_parts():
    env = make(DISCRETE)
    _, info = env.reset(seed=0)
    u = env.unwrapped
    np.testing.assert_array_equal(u.action_masks(), info["action_mask"])
    assert info["action_mask"].shape == (int(u.action_space.nvec.sum()),)
    for p in range(4):
        assert info["action_mask"][u.core.mask_offsets[p] : u.core.mask_offsets[p + 1]].any()


# ---------------------------------------------------------------------------------------------
# Rejection
# ---------------------------------------------------------------------------------------------

PENALTY_S = 77.0


def rejecting_scenario() -> dict:
    """One server that hosts only a model nobody asks for, and a device too small for the one
    model that is asked for (llama-3-8b: 16 GB of weights, the Pi has 3 GB)."""
    return {
        "name": "nothing-fits",
        "devices": ["raspberry-pi-4"],
        "servers": [
            {"preset": "edge-a6000", "name": "tiny-only", "hosted_models": ["tinyllama-1.1b"]}
        ],
        "models": ["llama-3-8b", "tinyllama-1.1b"],
        "workload": {"mix": {"llama-3-8b": 1.0}},
        "max_servers": 2,
        "episode_requests": 4,
        "rejection_penalty_s": PENALTY_S,
    }


@pytest.mark.parametrize("mode", ["fallback", "raise"])
def test_rejection_when_no_target_fits(mode):
    env = LLMOffloadEnv(scenario=rejecting_scenario(), invalid_action=mode)
    obs, info = env.reset(seed=0)
    core = env.core
    for t in range(4):
        mask = info["action_mask"]
        for p in range(4):
            part = mask[core.mask_offsets[p] : core.mask_offsets[p + 1]]
            assert np.flatnonzero(part).tolist() == [0], (p, part)
        assert obs[LOCAL_OPEN] == 0.0
        assert obs[len(OffloadCore.REQUEST_FEATURES) + SERVER_OPEN] == 0.0
        obs, reward, _, truncated, info = env.step([0, 0, 0, 0])
        assert info["rejected"] is True
        assert info["costs"][0] == PENALTY_S
        assert reward[0] == np.float32(-PENALTY_S)  # latency is the first objective
        assert env.reward_space.contains(reward)
        assert env.observation_space.contains(obs)
        assert truncated == (t == 3)


def test_rejection_ignores_other_actions_in_fallback_mode():
    env = LLMOffloadEnv(scenario=rejecting_scenario())
    env.reset(seed=0)
    _, reward, _, _, info = env.step([1, 1, 1, 0])
    assert info["rejected"] is True
    assert info["costs"][0] == PENALTY_S
    assert info["plan"].tolist() == [0, 0, 0, 0]


def test_rejection_raise_mode_rejects_masked_parts():
    env = LLMOffloadEnv(scenario=rejecting_scenario(), invalid_action="raise")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="target.*masked"):
        env.step([1, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", LLM_IDS)
def test_ansi_render_names_every_server(env_id):
    env = make(env_id, render_mode="ansi")
    env.reset(seed=0)
    names = [s.name for s in env.unwrapped.scenario.servers]
    text = env.render()
    assert isinstance(text, str)
    assert all(name in text for name in names)
    env.action_space.seed(0)
    env.step(env.action_space.sample())
    text = env.render()
    assert isinstance(text, str) and "last plan" in text
    assert all(name in text for name in names)


def test_vector_ansi_render_names_every_server():
    env = gym.make_vec(DISCRETE, num_envs=2, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str)
    for server in env.scenario.servers:
        assert text.count(server.name) >= 2


def test_render_without_mode_returns_none():
    env = make(DISCRETE)
    env.reset(seed=0)
    assert env.render() is None


@pytest.mark.parametrize("env_id", env_params())
@pytest.mark.parametrize("mode", ["human", "rgb_array", "ANSI"])
def test_invalid_render_mode_raises(env_id, mode):
    with pytest.raises(ValueError, match="render_mode"):
        make(env_id, render_mode=mode)


@pytest.mark.parametrize("env_id", env_params((GMORL,)))
def test_gmorl_ansi_render_names_every_server(env_id):
    env = make(env_id, render_mode="ansi", num_edges=3)
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str)
    for name in ("cloud", "edge 1", "edge 2", "edge 3"):
        assert name in text
    assert "edge 4" not in text


def test_continuous_vector_env_matches_the_single_env_decoding():
    """The continuous vector env decodes like the single env: the same plan and the same
    costs, env by env, for the same observations and actions."""
    venv = gym.make_vec(CONTINUOUS, num_envs=3)
    assert venv.single_action_space.shape == make(CONTINUOUS).action_space.shape
    _, info = venv.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(70):  # crosses an episode end
        actions = rng.uniform(-1, 1, (3,) + venv.single_action_space.shape)
        single = [_single_continuous_plan(venv, i, actions[i]) for i in range(3)]
        _, reward, _, _, info = venv.step(actions)
        assert reward.shape == (3, venv.reward_dim)
        assert not info["fallback"].any()
        for i in range(3):
            np.testing.assert_array_equal(info["plan"][i], single[i])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        venv.step(np.full((3,) + venv.single_action_space.shape, 2.0))


def _single_continuous_plan(venv, i, action):
    """The plan the single env's decode picks for env i's state (through a 1-row view)."""
    from mec_env.envs.llm_offload import decode_continuous

    class OneRow:
        nvec = venv.core.nvec
        scenario = venv.core.scenario
        req_device = venv.core.req_device[i : i + 1]
        ok_st = venv.core.ok_st[i : i + 1]
        ok_p = venv.core.ok_p[i : i + 1]

        @staticmethod
        def part_mask(part):
            return venv.core.part_mask(part)[i : i + 1]

    plans, _ = decode_continuous(OneRow, action[None, :])
    return plans[0]


@pytest.mark.parametrize("env_id", ["mec_env/LLMOffload-v0", "mec_env/GMORLOffload-v0"])
def test_per_sub_env_seeds_replay_the_single_env_episode(env_id):
    """reset(seed=[s] * n): every sub-env plays the episode a single env seeded with s plays
    (the evaluation protocol: every preference on the same episodes)."""
    kwargs = {"scenario": "tiny"} if "LLM" in env_id else {"num_edges": 3}
    single = gym.make(env_id, **kwargs)
    vec = gym.make_vec(env_id, num_envs=3, **kwargs)
    for seed in (4, 11):
        obs, info = single.reset(seed=seed)
        vobs, vinfo = vec.reset(seed=[seed] * 3)
        for _ in range(2 * 100 + 3):  # across an autoreset
            assert np.array_equal(vobs, np.stack([obs] * 3))
            mask = np.asarray(info["action_mask"], bool)
            if "LLM" in env_id:  # the first open choice of every part
                offsets = np.cumsum([0, *single.action_space.nvec])
                parts = zip(offsets[:-1], offsets[1:], strict=True)
                action = np.array([np.flatnonzero(mask[a:b])[0] for a, b in parts])
            else:
                action = int(np.flatnonzero(mask)[-1])
            obs, r, term, trunc, info = single.step(action)
            vobs, vr, vterm, vtrunc, vinfo = vec.step(np.stack([action] * 3))
            assert np.array_equal(vr, np.stack([r] * 3))
            if term or trunc:  # the next episode continues each env's own stream
                obs, info = single.reset()
                vobs, vr, _, _, vinfo = vec.step(np.stack([action] * 3))  # NEXT_STEP autoreset
    with pytest.raises(ValueError, match="seed must be"):
        vec.reset(seed=[1, 2])
