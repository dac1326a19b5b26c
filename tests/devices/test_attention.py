"""Decode attention math (devices.attention) and the host baseline (devices.host) against
torch.nn.functional.scaled_dot_product_attention on the same data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.attention import (
    OnlineSoftmax,
    grouped_partial_attention,
    merge_partials,
    page_key_summary,
    page_scores,
    partial_attention,
    sparse_attention,
    streamed_attention,
    topk_pages,
)
from devices.host import HostAttention
from devices.kvstore import KVStore
from devices.links import Link
from devices.worker import PartialResults

TOL = {torch.float16: 1e-3, torch.float32: 1e-5}


def sdpa(q, k, v):
    """SDPA reference in fp32 with grouped-query heads: q [B, Hq, D], k/v [B, Hkv, N, D]."""
    out = F.scaled_dot_product_attention(
        q.float().unsqueeze(2), k.float(), v.float(), enable_gqa=True
    )
    return out.squeeze(2)


def assert_close(out, ref, dtype):
    tol = TOL[dtype]
    # compare in the output dtype: the reference rounded like the result (1 ulp apart at most)
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), atol=tol, rtol=tol)


def make(B, Hq, Hkv, N, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, D, generator=g).to(dtype)
    k = torch.randn(B, Hkv, N, D, generator=g).to(dtype)
    v = torch.randn(B, Hkv, N, D, generator=g).to(dtype)
    return q, k, v


def lse_ref(q, k, D):
    """logsumexp of the scaled scores, per query head, GQA, fp32."""
    G = q.shape[-2] // k.shape[-3]
    kr = k.float().repeat_interleave(G, dim=-3)  # [B, Hq, N, D]
    s = torch.einsum("bhd,bhnd->bhn", q.float(), kr) / math.sqrt(D)
    return torch.logsumexp(s, dim=-1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("Hq,Hkv", [(8, 2), (4, 4), (8, 1)])
@pytest.mark.parametrize("N", [1, 15, 16, 17, 100])
def test_partial_attention_matches_sdpa(dtype, Hq, Hkv, N):
    D = 32
    q, k, v = make(3, Hq, Hkv, N, D, dtype)
    out, lse = partial_attention(q, k, v)
    assert out.dtype == dtype and out.shape == q.shape
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:-1]
    assert_close(out, sdpa(q, k, v), dtype)
    torch.testing.assert_close(lse, lse_ref(q, k, D), atol=1e-5, rtol=1e-5)
    # unbatched form: q [Hq, D], k [Hkv, N, D]
    out1, lse1 = partial_attention(q[1], k[1], v[1])
    assert_close(out1, sdpa(q[1:2], k[1:2], v[1:2])[0], dtype)
    torch.testing.assert_close(lse1, lse[1])


def test_empty_kv_is_the_merge_identity():
    q, k, v = make(2, 8, 2, 0, 16, torch.float32)
    out, lse = partial_attention(q, k, v)
    assert torch.all(out == 0) and torch.all(torch.isneginf(lse))
    q2, k2, v2 = make(2, 8, 2, 9, 16, torch.float32, seed=1)
    full = partial_attention(q2, k2, v2)
    merged = merge_partials([(out, lse), full])
    torch.testing.assert_close(merged[0], full[0])
    torch.testing.assert_close(merged[1], full[1])
    both_empty = merge_partials([(out, lse), (out, lse)])
    assert torch.all(both_empty[0] == 0) and torch.all(torch.isneginf(both_empty[1]))
    s_out, s_lse = streamed_attention(q, [])
    assert torch.all(s_out == 0) and torch.all(torch.isneginf(s_lse))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("cuts", [(40,), (1, 77), (0, 30, 99)])
def test_merge_partials_two_and_three_splits(dtype, cuts):
    N, D = 100, 32
    q, k, v = make(2, 8, 2, N, D, dtype)
    bounds = [0, *cuts, N]
    parts = [
        partial_attention(q, k[:, :, a:b], v[:, :, a:b])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    out, lse = merge_partials(parts)
    assert_close(out, sdpa(q, k, v), dtype)
    torch.testing.assert_close(lse, lse_ref(q, k, D), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("N", [1, 16, 33, 250])
def test_streamed_attention_over_pages(dtype, N):
    D, pt = 64, 16
    q, k, v = make(1, 8, 2, N, D, dtype)
    q1, k1, v1 = q[0], k[0], v[0]
    pages = ((p, k1[:, i : i + pt], v1[:, i : i + pt]) for p, i in enumerate(range(0, N, pt)))
    out, lse = streamed_attention(q1, pages)  # (page_id, K, V) triples, [Hkv, t, D]
    assert_close(out, sdpa(q, k, v)[0], dtype)
    torch.testing.assert_close(lse, lse_ref(q, k, D)[0], atol=1e-5, rtol=1e-5)
    # batched q with [B, Hkv, t, D] pages, (K, V) pairs
    out_b, _ = streamed_attention(
        q, ((k[:, :, i : i + 7], v[:, :, i : i + 7]) for i in range(0, N, 7))
    )
    assert_close(out_b, sdpa(q, k, v), dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_update_blocks_on_strided_page_views(dtype):
    """OnlineSoftmax.update_blocks on [pages, t, D] views with gaps between pages (as the page
    reader returns them) plus a partial page equals dense attention of one KV head."""
    D, pt, P = 32, 16, 37
    g = torch.Generator().manual_seed(3)
    slots = torch.randn(P, 2 * pt + 3, D, generator=g).to(dtype)  # K rows, V rows, junk rows
    kp, vp = slots[:, :pt], slots[:, pt : 2 * pt]
    kt, vt = torch.randn(5, D, generator=g).to(dtype), torch.randn(5, D, generator=g).to(dtype)
    q = torch.randn(4, D, generator=g).to(dtype)
    st_ = OnlineSoftmax(q.float() / math.sqrt(D))
    st_.update_blocks([(kp[:10], vp[:10])], block_tokens=64)  # two calls: the running merge
    st_.update_blocks([(kp[10:], vp[10:]), (kt, vt)], block_tokens=100)
    out, lse = st_.result()
    K = torch.cat([kp.reshape(-1, D), kt])[None, None]
    V = torch.cat([vp.reshape(-1, D), vt])[None, None]
    assert_close(out.to(dtype), sdpa(q[None], K, V)[0], dtype)
    torch.testing.assert_close(lse, lse_ref(q[None], K, D)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_fused_kernel_and_tensor_op_paths_agree(dtype):
    """update_blocks takes PyTorch's fused CPU kernel for contiguous pieces when given the raw
    query, the block-wise tensor-op path otherwise; both equal SDPA."""
    D, G = 64, 4
    g = torch.Generator().manual_seed(8)
    q = torch.randn(G, D, generator=g).to(dtype)
    pieces = [
        (torch.randn(n, D, generator=g).to(dtype), torch.randn(n, D, generator=g).to(dtype))
        for n in (1, 300, 0, 47)
    ]
    sc = 1 / math.sqrt(D)
    results = []
    for raw in (q, None):
        st_ = OnlineSoftmax(q.float() * sc, raw, sc)
        st_.update_blocks(pieces[:2], block_tokens=128)
        st_.update_blocks(pieces[2:], block_tokens=128)
        results.append(st_.result())
        assert st_.tokens == 348
    K = torch.cat([k for k, _ in pieces])[None, None]
    V = torch.cat([v for _, v in pieces])[None, None]
    for out, lse in results:
        assert_close(out.to(dtype), sdpa(q[None], K, V)[0], dtype)
        torch.testing.assert_close(lse, lse_ref(q[None], K, D)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("q_dtype", ["same", "fp32"])
def test_grouped_partial_attention_matches_sdpa_on_strided_heads(dtype, q_dtype):
    """All KV heads in one call: the fused kernel (q in the KV dtype) or the blocked tensor-op
    path (q in another dtype), on KV heads that are views with gaps between them, as the page
    reader's buffers give them."""
    F, G, D, n = 5, 3, 32, 70
    g = torch.Generator().manual_seed(12)
    kbuf = torch.randn(F, n + 9, D, generator=g).to(dtype)
    vbuf = torch.randn(F, n + 9, D, generator=g).to(dtype)
    k, v = kbuf[:, 2 : 2 + n], vbuf[:, 5 : 5 + n]
    q = torch.randn(F, G, D, generator=g).to(dtype if q_dtype == "same" else torch.float32)
    out, lse = grouped_partial_attention(q, k, v, block_tokens=16)
    assert out.dtype == lse.dtype == torch.float32 and out.shape == (F, G, D)
    qq = q.reshape(1, F * G, D)
    assert_close(out.reshape(1, F * G, D).to(dtype), sdpa(qq, k[None], v[None]), dtype)
    torch.testing.assert_close(lse.reshape(1, -1), lse_ref(qq, k[None], D), atol=1e-5, rtol=1e-5)
    # split over the tokens and merged by PartialResults (groups 0-1 whole, 2-4 in 3 slices)
    res = PartialResults(F, G, D, max_pending=2)  # merged into running results, 2 at a time
    res.add(0, *grouped_partial_attention(q[:2], k[:2], v[:2]), whole=True)
    for f in range(2, F):
        for a, b in ((0, 30), (30, 31), (31, n)):
            o, l_ = grouped_partial_attention(q[f : f + 1], k[f : f + 1, a:b], v[f : f + 1, a:b])
            res.add(f, o, l_, whole=False)
    res.finish()
    assert_close(res.out.to(dtype), out.to(dtype), dtype)
    torch.testing.assert_close(res.lse, lse, atol=1e-5, rtol=1e-5)
    empty_out, empty_lse = grouped_partial_attention(q, k[:, :0], v[:, :0])
    assert torch.all(empty_out == 0) and torch.all(torch.isneginf(empty_lse))


@settings(max_examples=40, deadline=None)
@given(
    B=st.sampled_from([None, 1, 3]),
    Hkv=st.integers(1, 3),
    G=st.integers(1, 4),
    N=st.integers(0, 70),
    D=st.sampled_from([8, 16, 32]),
    page=st.integers(1, 20),
    cut_fracs=st.lists(st.floats(0, 1), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_paths_agree_on_random_shapes(B, Hkv, G, N, D, page, cut_fracs, seed):
    q, k, v = make(B or 1, Hkv * G, Hkv, N, D, torch.float32, seed)
    if B is None:
        q, k, v = q[0], k[0], v[0]
    out, lse = partial_attention(q, k, v)
    if N:
        ref = sdpa(q if B else q[None], k if B else k[None], v if B else v[None])
        torch.testing.assert_close(out, ref if B else ref[0], atol=1e-5, rtol=1e-5)
    s_out, s_lse = streamed_attention(
        q, ((k[..., i : i + page, :], v[..., i : i + page, :]) for i in range(0, N, page))
    )
    torch.testing.assert_close(s_out, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s_lse, lse, atol=1e-5, rtol=1e-5)
    cuts = sorted({0, N, *(int(f * N) for f in cut_fracs)})
    parts = [
        partial_attention(q, k[..., a:b, :], v[..., a:b, :])
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]
    m_out, m_lse = merge_partials(parts or [(out, lse)])
    torch.testing.assert_close(m_out, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m_lse, lse, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# sparse mode (approximate)
# ---------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(N=st.integers(1, 80), G=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_page_scores_bound_every_key_of_the_page(N, G, seed):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(N, 8, generator=g)
    q = torch.randn(G, 8, generator=g)
    kmin, kmax = page_key_summary(k, 16)
    bound = page_scores(q, kmin, kmax)
    for p in range(kmin.shape[0]):
        actual = (q @ k[p * 16 : (p + 1) * 16].T).max()
        assert bound[p] >= actual - 1e-5


def test_sparse_dense_when_keeping_everything_and_finds_the_planted_page():
    D, N = 32, 160
    q, k, v = make(1, 4, 2, N, D, torch.float32, seed=5)
    q, k, v = q[0], k[0], v[0]
    out_d, _ = partial_attention(q, k, v)
    out_s, _ = sparse_attention(q, k, v, keep_fraction=1.0)
    torch.testing.assert_close(out_s, out_d, atol=1e-5, rtol=1e-5)
    # plant keys aligned with the queries in page 3: the top page picked, attention close
    k2 = k.clone()
    for h in range(2):
        k2[h, 48:64] = 8.0 * q[2 * h : 2 * h + 2].mean(0)
    kmin, kmax = page_key_summary(k2[0], 16)
    pages = topk_pages(q[0:2], kmin, kmax, keep_fraction=0.2)
    assert 3 in pages.tolist() and 9 in pages.tolist()  # planted page and the last page
    assert len(pages) == 2
    dense, _ = partial_attention(q, k2, v)
    sparse, _ = sparse_attention(q, k2, v, keep_fraction=0.2)
    torch.testing.assert_close(sparse, dense, atol=1e-3, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# host baseline
# ---------------------------------------------------------------------------------------------


def _store_with(tmp_path, name, k, v, dtype):
    """A KVStore holding sequence 0 with k, v [N, L, Hkv, D] (N may be 0)."""
    N, L, Hkv, D = k.shape
    store = KVStore(tmp_path / name, L, Hkv, D, dtype)
    if N:
        store.append(0, k.to(dtype), v.to(dtype))
    return store


def _ref_layers(q, k, v):
    """SDPA per layer: q [L, Hq, D], k/v [N, L, Hkv, D] -> [L, Hq, D] fp32."""
    return sdpa(q, k.permute(1, 2, 0, 3), v.permute(1, 2, 0, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("N", [1, 17, 40])
@pytest.mark.parametrize("page_budget", [None, 2])
def test_host_attention_matches_sdpa_and_moves_exactly_the_kv(tmp_path, dtype, N, page_budget):
    L, Hq, Hkv, D = 2, 8, 2, 32
    g = torch.Generator().manual_seed(N)
    k = torch.randn(N + 1, L, Hkv, D, generator=g).to(dtype)
    v = torch.randn(N + 1, L, Hkv, D, generator=g).to(dtype)
    q = torch.randn(L, Hq, D, generator=g).to(dtype)
    store = _store_with(tmp_path, "h", k[:N], v[:N], dtype)
    link = Link("host")
    host = HostAttention(store, link, device="cpu", page_budget=page_budget)
    elem = torch.empty(0, dtype=dtype).element_size()
    out, lse = host.attend(0, q, return_lse=True)
    assert out.dtype == dtype and lse.shape == (L, Hq)
    assert_close(out, _ref_layers(q, k[:N], v[:N]), dtype)
    assert link.bytes_total == 2 * N * D * elem * L * Hkv  # the KV pages, nothing else
    link.reset()
    out = host.decode_step(0, q, k[N], v[N])
    assert_close(out, _ref_layers(q, k, v), dtype)
    # the new token's k, v written to storage, then the whole KV (N + 1 tokens) read back
    assert link.bytes_total == 2 * L * Hkv * D * elem + 2 * (N + 1) * D * elem * L * Hkv
    if page_budget is not None:
        assert host.pipeline.peak_pages <= page_budget
    host.close()
    store.close()


def test_host_empty_sequence_and_fast_tier_merge(tmp_path):
    """Split-KV on the host: fast tier + stored part, merged exactly; an empty store part."""
    dtype, L, Hq, Hkv, D, N = torch.float16, 2, 8, 2, 32, 50
    g = torch.Generator().manual_seed(9)
    k = torch.randn(N, L, Hkv, D, generator=g).to(dtype)
    v = torch.randn(N, L, Hkv, D, generator=g).to(dtype)
    q = torch.randn(L, Hq, D, generator=g).to(dtype)
    store = _store_with(tmp_path, "h", k[20:], v[20:], dtype)
    host = HostAttention(store, Link("host"), device="cpu")
    fast = (k[:20].permute(1, 2, 0, 3), v[:20].permute(1, 2, 0, 3))  # [L, Hkv, n, D]
    out = host.merged_attend(q, fast_kv=fast, seq_id=0)
    assert_close(out, _ref_layers(q, k, v), dtype)
    empty_out, empty_lse = host.attend(7, q, return_lse=True)  # never appended
    assert torch.all(empty_out == 0) and torch.all(torch.isneginf(empty_lse))
    host.close()
    store.close()


@pytest.mark.gpu
def test_host_attention_on_cuda_matches_sdpa(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    L, Hq, Hkv, D, N = 2, 8, 2, 64, 77
    for dtype in (torch.float16, torch.float32):
        g = torch.Generator().manual_seed(4)
        k = torch.randn(N, L, Hkv, D, generator=g).to(dtype)
        v = torch.randn(N, L, Hkv, D, generator=g).to(dtype)
        q = torch.randn(L, Hq, D, generator=g).to(dtype)
        store = _store_with(tmp_path, f"g{dtype}", k, v, dtype)
        link = Link("pcie")
        host = HostAttention(store, link, device="auto")
        assert host.device.type == "cuda"
        out, lse = host.attend(0, q.cuda(), return_lse=True)
        assert out.is_cuda and lse.is_cuda
        ref = F.scaled_dot_product_attention(
            q.cuda().float().unsqueeze(2),
            k.cuda().float().permute(1, 2, 0, 3),
            v.cuda().float().permute(1, 2, 0, 3),
            enable_gqa=True,
        ).squeeze(2)
        assert_close(out.cpu(), ref.cpu(), dtype)
        elem = torch.empty(0, dtype=dtype).element_size()
        assert link.bytes_total == 2 * N * D * elem * L * Hkv
        host.close()
        store.close()
