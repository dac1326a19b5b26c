"""ReplayBuffer: ring order, sampling, and a state that round-trips through torch.save."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from agents.buffer import ReplayBuffer


def _filled(capacity: int = 5, added: int = 7, mask_dim: int = 3) -> ReplayBuffer:
    buf = ReplayBuffer(capacity, obs_dim=2, action_shape=(2,), action_dtype=np.int64,
                       reward_dim=2, mask_dim=mask_dim)  # fmt: skip
    for i in range(added):
        buf.add(
            obs=np.full((1, 2), i, np.float32),
            actions=np.full((1, 2), i, np.int64),
            rewards=np.full((1, 2), -i, np.float32),
            next_obs=np.full((1, 2), i + 1, np.float32),
            terminated=np.array([i % 2 == 0]),
            weights=np.array([[0.25, 0.75]], np.float32),
            masks=np.array([[True, i % 2 == 1, False]]),
            next_masks=np.array([[False, True, i % 3 == 0]]),
        )
    return buf


def test_ring_keeps_the_newest_transitions():
    buf = _filled(capacity=5, added=7)
    assert len(buf) == 5 and buf.pos == 2
    assert sorted(buf.obs[:, 0].tolist()) == [2, 3, 4, 5, 6]


def test_sample_draws_only_stored_transitions():
    buf = _filled(capacity=8, added=3)
    batch = buf.sample(64, np.random.default_rng(0))
    assert set(batch["obs"][:, 0].tolist()) <= {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(batch["next_obs"], batch["obs"] + 1)
    assert batch["masks"].dtype == bool and batch["masks"].shape == (64, 3)


def test_state_is_tensors_that_survive_torch_save_and_later_adds():
    buf = _filled()
    state = buf.state_dict()
    assert all(isinstance(state[name], torch.Tensor) for name in ReplayBuffer._ARRAYS)
    snapshot = {name: state[name].clone() for name in ReplayBuffer._ARRAYS}
    buf.add(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)),
            np.zeros(1), np.zeros((1, 2)), np.ones((1, 3), bool), np.ones((1, 3), bool))  # fmt: skip
    for name in ReplayBuffer._ARRAYS:  # a copy: the add above did not change it
        assert torch.equal(state[name], snapshot[name]), name
    blob = io.BytesIO()
    torch.save(state, blob)
    blob.seek(0)
    more = _filled(added=0)
    more.load_state_dict(torch.load(blob, weights_only=True))
    restored = _filled()
    for name in ReplayBuffer._ARRAYS:
        np.testing.assert_array_equal(getattr(more, name), getattr(restored, name), err_msg=name)
    assert (more.pos, more.size) == (restored.pos, restored.size)


def test_loads_a_state_of_numpy_arrays_from_older_checkpoints():
    buf = _filled()
    old = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in buf.state_dict().items()}
    fresh = _filled(added=0)
    fresh.load_state_dict(old)
    for name in ReplayBuffer._ARRAYS:
        np.testing.assert_array_equal(getattr(fresh, name), getattr(buf, name), err_msg=name)


def test_a_state_of_another_shape_is_refused_by_field_name():
    state = _filled().state_dict()
    state["obs"] = torch.zeros(len(state["obs"]), 9)
    with pytest.raises(ValueError, match="buffer field obs has shape"):
        _filled(added=0).load_state_dict(state)
