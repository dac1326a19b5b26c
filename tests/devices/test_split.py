"""Split executor: two spawned processes reproduce the unsplit network; the bytes on the link
are the activation's; a paced link sets the transfer time."""

from __future__ import annotations

import pytest
import torch

from devices.split import (
    SplitExecutor,
    build_tiny_resnet,
    dequantize_int8,
    quantize_int8,
    split_model,
)

# Output shape (per sample) after blocks[:s] of build_tiny_resnet, s = 0..6.
ACT_SHAPES = {
    0: (3, 32, 32),
    1: (16, 32, 32),
    2: (16, 32, 32),
    3: (32, 16, 16),
    4: (64, 8, 8),
    5: (64,),
    6: (10,),
}
BATCH = 4


def numel(shape: tuple[int, ...]) -> int:
    n = BATCH
    for d in shape:
        n *= d
    return n


@pytest.fixture(scope="module")
def inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(3)]


@pytest.fixture(scope="module")
def reference(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    model = build_tiny_resnet(0)
    with torch.no_grad():
        return [model(x) for x in inputs]


def test_split_model_halves_compose_to_the_model() -> None:
    model = build_tiny_resnet(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = model(x)
        for s in range(len(model) + 1):
            head, tail = split_model(model, s)
            act = head(x)
            assert tuple(act.shape[1:]) == ACT_SHAPES[s]
            torch.testing.assert_close(tail(act), full, rtol=0, atol=1e-6)


@pytest.mark.parametrize("split_index,gbps", [(0, None), (2, 0.01), (6, None)])
def test_fp32_split_equals_unsplit_and_sends_activation_bytes(
    split_index: int, gbps: float | None, inputs: list[torch.Tensor], reference: list[torch.Tensor]
) -> None:
    latency_s = 0.002 if gbps else 0.0
    with SplitExecutor(split_index, link_gbps=gbps, latency_s=latency_s) as ex:
        procs = list(ex._procs)
        assert len(procs) == 2 and all(p.is_alive() for p in procs)
        outputs, stats = ex.run(inputs)
        single, single_stats = ex.run(inputs[0])
    assert not any(p.is_alive() for p in procs)  # the context manager stopped both
    for out, ref in zip(outputs, reference, strict=True):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(single, reference[0], rtol=0, atol=1e-5)
    per_request = numel(ACT_SHAPES[split_index]) * 4  # fp32
    assert [r["bytes"] for r in stats["requests"]] == [per_request] * 3
    assert stats["bytes_sent"] == 3 * per_request
    assert single_stats["bytes_sent"] == per_request
    for key in ("head_s", "transfer_s", "tail_s", "wall_s"):
        assert stats[key] >= 0
    if split_index == 0:
        assert stats["head_s"] < stats["tail_s"]  # the empty head does no work
    if gbps is not None:
        # 16x32x32 fp32 x 4 = 262 KB at 0.01 GB/s: 26.2 ms (+ 2 ms latency) per request.
        expected_s = latency_s + per_request / (gbps * 1e9)
        for r in stats["requests"]:
            assert r["link_s"] >= 0.98 * expected_s
            assert r["transfer_s"] <= expected_s + 0.5  # loose: the pipe on a shared machine
        assert stats["wall_s"] >= 3 * 0.98 * expected_s  # one link: requests queue on it
    else:
        assert all(r["link_s"] < 0.01 for r in stats["requests"])  # unpaced: counts only


@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_int8_bottleneck_bytes_and_error_bound(
    granularity: str, inputs: list[torch.Tensor], reference: list[torch.Tensor]
) -> None:
    split_index = 3 if granularity == "tensor" else 5  # a 4-D and a 2-D activation
    with SplitExecutor(split_index, int8=True, granularity=granularity) as ex:
        outputs, stats = ex.run(inputs)
    channels = ACT_SHAPES[split_index][0]  # dim 1 of [batch, C, ...]
    scale_bytes = 4 * (1 if granularity == "tensor" else channels)  # fp32 scales
    per_request = numel(ACT_SHAPES[split_index]) * 1 + scale_bytes
    assert stats["bytes_sent"] == 3 * per_request
    # Reported bound: every output within 2% of the reference's largest magnitude.
    for out, ref in zip(outputs, reference, strict=True):
        err = (out - ref).abs().max().item()
        assert 0 < err <= 0.02 * ref.abs().max().item(), err


def test_quantize_int8_error_within_half_a_step() -> None:
    x = torch.randn(3, 5, 4, 4) * torch.tensor([0.1, 1.0, 10.0, 0.0, 2.0]).view(1, 5, 1, 1)
    for granularity, n_scales in (("tensor", 1), ("channel", 5)):
        q, scale = quantize_int8(x, granularity)
        assert q.dtype == torch.int8 and scale.dtype == torch.float32
        assert scale.numel() == n_scales
        back = dequantize_int8(q, scale)
        step = scale if scale.ndim == 0 else scale.view(1, -1, 1, 1)
        assert torch.all((back - x).abs() <= step / 2 + 1e-6)
    with pytest.raises(ValueError, match="granularity"):
        quantize_int8(x, "row")


@pytest.mark.parametrize("bad", [-1, 7, 2.5, True, "3"])
def test_bad_split_index_raises_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match="split_index"):
        SplitExecutor(bad)  # type: ignore[arg-type]


def test_bad_arguments_and_not_started() -> None:
    with pytest.raises(ValueError, match="link_gbps"):
        SplitExecutor(2, link_gbps=0.0)
    with pytest.raises(ValueError, match="granularity"):
        SplitExecutor(2, int8=True, granularity="row")
    with pytest.raises(RuntimeError, match="not running"):
        SplitExecutor(2).run(torch.zeros(1, 3, 32, 32))
