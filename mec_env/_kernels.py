"""Compiled (numba) loops of :class:`mec_env.core.OffloadCore`: one step for N envs per call.

Every function loops over the leading environment axis inside compiled code, so the single env
(N = 1) and the vector env (N = 256) run the same code with no per-step Python loops or
allocations. The formulas are those of :mod:`mec_env.cost_model` (processor sharing comes from
there as compiled row functions; the coefficient tables are built there too).

Arrays are grouped to keep the call cheap (numba pays per argument); the ``*_F``/``*_I``
constants below name the columns. Index names: n env, d device, g target (0 = local, j = server
j - 1), m model, s split, k KV tier, p expert policy, r resource row (servers first, then one row
per device), q slot.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np
from numba import njit, prange

# The threaded step uses numba's own "workqueue" thread pool: the OpenMP layer would share its
# runtime with PyTorch's and change torch's thread count, slowing training that runs beside
# the env. NUMBA_THREADING_LAYER still chooses when set.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

from mec_env.cost_model import ps_row_own_added, ps_row_served

# fp: scalar parameters
FP_BANDWIDTH_HZ, FP_NOISE_W, FP_MIN_RATE_BPS, FP_PENALTY_S, FP_HIST_MAX_S, FP_EPISODE = range(6)
FP_NUM_SERVERS = 6
NUM_FP = 7
# plan_coef[d, g, m, s, k, p, :]: work (3), server energy (3), accuracy loss, cold-cache work
PC_WORK, PC_ENERGY, PC_ACCURACY, PC_COLD = 0, 3, 6, 7
# split_coef[d, g, m, s, :]: uplink bytes per prompt token, per output token; KV bytes per token;
# bytes held whatever the length (a local job's weights); device head time (3 coefficients);
# round trips (fixed, per output token)
SC_UP_P, SC_UP_O, SC_KV, SC_HELD, SC_HEAD, SC_TRIPS = 0, 1, 2, 3, 4, 7
# dg[d, g, :]: wired bottleneck bps, round trip s, log10(wired bps) / 11 capped at 1, then
# capacity bytes per tier
DG_WIRED_BPS, DG_RTT_S, DG_LOG_WIRED, DG_CAP = 0, 1, 2, 3
# dev_f[d, :]: tx power W, static W, dynamic W, full battery J, then observation features (2)
DV_TX_W, DV_STATIC_W, DV_DYNAMIC_W, DV_BATTERY_J, DV_FEAT = 0, 1, 2, 3, 4
# model_f[m, :]: observation features (6), is MoE, number of split points
MF_FEAT, MF_IS_MOE, MF_SPLITS = 0, 6, 7
NUM_MODEL_FEAT = 6
# tgt_f[g, :]: price USD/s, GPU busy power W
TG_PRICE, TG_BUSY_W = 0, 1
# srv_f[j, :]: present, cloud, (open), log flops, hbm; then capacity per tier (4), hosts model (M)
SV_CAP = 5
# env_f[n, :]: clock s, channel gain of the current request, then rate to each target (bps)
EF_NOW, EF_GAIN, EF_RATE = 0, 1, 2
# flags[n, :]
FL_REJECTING, FL_REJECTED, FL_TRUNCATED = 0, 1, 2
# env_i[n, :]: requests decided this episode, position in the request block, then the current
# request: device, model, prompt tokens, output tokens (frames)
CT_T, CT_POS, RQ_DEVICE, RQ_MODEL, RQ_PROMPT, RQ_OUTPUT = range(6)
NUM_REQUEST_FEATURES = NUM_MODEL_FEAT + 9
FINISHED_S = 1e-9  # remaining work below a nanosecond counts as done (rounding of the subtraction)
NUM_SERVER_FIXED = 14  # per server row, besides the histogram bins


@njit(cache=True)
def _wireless_bps(fp, tx_w, gain):
    rate = fp[FP_BANDWIDTH_HZ] * math.log2(1.0 + tx_w * gain / fp[FP_NOISE_W])
    return max(rate, fp[FP_MIN_RATE_BPS])


@njit(cache=True)
def _any(row):
    for i in range(row.shape[0]):
        if row[i]:
            return True
    return False


@njit(cache=True)
def _first_true(row):
    for i in range(row.shape[0]):
        if row[i]:
            return i
    return 0


@njit(cache=True)
def _advance(n, fp, blk_f, env_i, env_f, remaining, kv_bytes, used, busy):
    """Move env n's clock to its next arrival with exact processor sharing on every row."""
    dt = blk_f[n, env_i[n, CT_POS], 0]
    env_f[n, EF_NOW] += dt
    R = remaining.shape[2]
    K = kv_bytes.shape[3]
    for r in range(remaining.shape[1]):
        if busy[n, r] == 0:
            continue
        served = ps_row_served(remaining[n, r, R - busy[n, r] :], dt)
        for q in range(R - busy[n, r], R):  # busy jobs sit at the end of the sorted row
            w = remaining[n, r, q] - served
            if w <= FINISHED_S:
                w = 0.0
                busy[n, r] -= 1
                for k in range(K):
                    used[n, r, k] -= kv_bytes[n, r, q, k]
                    kv_bytes[n, r, q, k] = 0.0
            remaining[n, r, q] = w
        if busy[n, r] == 0:
            for k in range(K):
                used[n, r, k] = 0.0  # no rounding residue on an empty row


@njit(cache=True)
def _prepare(
    n, fp, blk_f, blk_i, env_i, env_f, remaining, used, busy, cache_model, battery,
    dg, res_of_target, split_coef, feas_split, feas_tp, model_f, dev_f, srv_f, slots,
    ok_st, ok_p, masks, flags, free, obs,
):  # fmt: skip
    """Expose env n's next request, its masks and its observation."""
    G = ok_st.shape[1]
    NS = ok_st.shape[2]
    K = ok_st.shape[3]
    NP = ok_p.shape[2]
    S = G - 1
    pos = env_i[n, CT_POS]
    d = blk_i[n, pos, 0]
    m = blk_i[n, pos, 1]
    env_i[n, RQ_DEVICE] = d
    env_i[n, RQ_MODEL] = m
    env_i[n, RQ_PROMPT] = blk_i[n, pos, 2]
    env_i[n, RQ_OUTPUT] = blk_i[n, pos, 3]
    gain = blk_f[n, pos, 1]
    env_f[n, EF_GAIN] = gain
    tokens = float(env_i[n, RQ_PROMPT] + env_i[n, RQ_OUTPUT])
    wireless = _wireless_bps(fp, dev_f[d, DV_TX_W], gain)
    n_splits = int(model_f[m, MF_SPLITS])
    o_split = G
    o_tier = G + NS
    o_pol = G + NS + K
    mask = masks[n]
    mask[:] = False
    any_target = False
    G_real = 1 + int(fp[FP_NUM_SERVERS])  # padded server rows never change: always masked
    fs = feas_split[d]
    kvc = split_coef[d]
    for g in range(G_real):
        env_f[n, EF_RATE + g] = math.inf if g == 0 else min(wireless, dg[d, g, DG_WIRED_BPS])
        r = res_of_target[d, g]
        fr = free[n, g]
        for k in range(K):
            fr[k] = dg[d, g, DG_CAP + k] - used[n, r, k]
        st = ok_st[n, g]
        st[:, :] = False
        ftp = feas_tp[g, m]
        st_any = False
        if busy[n, r] < slots[r] and fs[g, m, 0]:  # split 0 is feasible wherever any split is
            for s in range(n_splits):
                if not fs[g, m, s]:
                    continue
                need = kvc[g, m, s, SC_KV] * tokens + kvc[g, m, s, SC_HELD]
                for k in range(K):
                    if ftp[k] and need <= fr[k]:
                        st[s, k] = True
                        st_any = True
        op = ok_p[n, g]
        p_any = False
        for p in range(NP):
            op[p] = ftp[K + p]
            p_any = p_any or op[p]
        if st_any and p_any:  # open target: open its parts too (factorised masks)
            mask[g] = True
            any_target = True
            for s in range(n_splits):
                for k in range(K):
                    if st[s, k]:
                        mask[o_split + s] = True
                        mask[o_tier + k] = True
            for p in range(NP):
                if op[p]:
                    mask[o_pol + p] = True
    flags[n, FL_REJECTING] = not any_target
    if not any_target:  # documented: only action 0 stays open; the step rejects
        masks[n, 0] = True
        masks[n, o_split] = True
        masks[n, o_tier] = True
        masks[n, o_pol] = True
    # ---- observation (layout: LLMOffloadEnv's card; core.REQUEST_FEATURES / SERVER_FEATURES);
    # every entry is in [0, 1] by construction except those clipped explicitly
    for j in range(NUM_MODEL_FEAT):
        obs[n, j] = model_f[m, MF_FEAT + j]
    o = NUM_MODEL_FEAT
    local_row = res_of_target[d, 0]
    obs[n, o + 0] = min(math.log2(env_i[n, RQ_PROMPT] + 1.0) / 21.0, 1.0)
    obs[n, o + 1] = min(math.log2(env_i[n, RQ_OUTPUT] + 1.0) / 21.0, 1.0)
    obs[n, o + 2] = dev_f[d, DV_FEAT]
    obs[n, o + 3] = dev_f[d, DV_FEAT + 1]
    obs[n, o + 4] = battery[n, d] / dev_f[d, DV_BATTERY_J]
    obs[n, o + 5] = busy[n, local_row] / slots[local_row]
    obs[n, o + 6] = 1.0 if (masks[n, 0] and any_target) else 0.0
    obs[n, o + 7] = min(env_i[n, CT_T] / fp[FP_EPISODE], 1.0)
    log_wireless = min(math.log10(wireless) / 11.0, 1.0)
    obs[n, o + 8] = log_wireless
    B = (obs.shape[1] - NUM_REQUEST_FEATURES) // S - NUM_SERVER_FIXED
    per = NUM_SERVER_FIXED + B
    hist_scale = B / fp[FP_HIST_MAX_S]
    R = remaining.shape[2]
    for j in range(G_real - 1):  # padded rows stay zero
        base = NUM_REQUEST_FEATURES + j * per
        g = j + 1
        for f in range(5):
            obs[n, base + f] = srv_f[j, f]
        obs[n, base + 2] = 1.0 if (masks[n, g] and any_target) else 0.0
        obs[n, base + 5] = min(log_wireless, dg[d, g, DG_LOG_WIRED])  # log10(min(a, b)) = min(logs)
        obs[n, base + 6] = min(dg[d, g, DG_RTT_S] * 100.0, 1.0)
        obs[n, base + 7] = busy[n, j] / slots[j]
        for b in range(B):
            obs[n, base + 8 + b] = 0.0
        for q in range(R - busy[n, j], R):
            b = min(int(remaining[n, j, q] * hist_scale), B - 1)
            obs[n, base + 8 + b] += 1.0 / slots[j]
        for k in range(K):
            cap = srv_f[j, SV_CAP + k]
            obs[n, base + 8 + B + k] = min(max(free[n, g, k] / cap, 0.0), 1.0) if cap > 0 else 0.0
        obs[n, base + 12 + B] = srv_f[j, SV_CAP + K + m]
        obs[n, base + 13 + B] = 1.0 if cache_model[n, j] == m else 0.0


@njit(cache=True)
def prepare(
    n_idx, fp, blk_f, blk_i, env_i, env_f, remaining, kv_bytes, used, busy, cache_model,
    battery, dg, res_of_target, split_coef, feas_split, feas_tp, model_f, dev_f, srv_f, slots,
    ok_st, ok_p, masks, flags, free, obs, advance_first,
):  # fmt: skip
    """Advance (optionally) and prepare the envs ``n_idx`` (after a reset or a refill)."""
    for i in range(n_idx.shape[0]):
        n = n_idx[i]
        if advance_first:
            _advance(n, fp, blk_f, env_i, env_f, remaining, kv_bytes, used, busy)
        _prepare(
            n, fp, blk_f, blk_i, env_i, env_f, remaining, used, busy, cache_model, battery,
            dg, res_of_target, split_coef, feas_split, feas_tp, model_f, dev_f, srv_f, slots,
            ok_st, ok_p, masks, flags, free, obs,
        )  # fmt: skip


@njit(cache=True)
def _check_actions(actions, nvec):
    for n in range(actions.shape[0]):
        for j in range(4):
            if actions[n, j] < 0 or actions[n, j] >= nvec[j]:
                return -1 - (4 * n + j)
    return 0


@njit(cache=True)
def _plan_cost(
    n, g, s, k, p, frac, freq, tx, fp, env_i, env_f, remaining, busy, cache_model, dg,
    res_of_target, plan_coef, split_coef, model_f, dev_f, tgt_f, out,
):  # fmt: skip
    """Costs of running env n's current request with plan (g, s, k, p), KV shares ``frac``,
    frequency ratio ``freq`` and transmit power ``tx``, given the current state; nothing changes.

    Writes ``out``: latency s (network + device head + processor-sharing completion + delay
    added to the jobs already running on the target), energy J, cost USD, accuracy loss, the
    exclusive work s placed on the target, and the device's energy J.
    """
    K = frac.shape[0]
    R = remaining.shape[2]
    d, m = env_i[n, RQ_DEVICE], env_i[n, RQ_MODEL]
    P, O = float(env_i[n, RQ_PROMPT]), float(env_i[n, RQ_OUTPUT])
    C = O * P + O * (O - 1.0) / 2.0  # context tokens summed over the decode steps
    local = g == 0
    # exclusive work on the target; tiers scan their KV share in parallel
    work = 0.0
    attn = 0.0
    server_j = 0.0
    for kk in range(K):
        f = frac[kk]
        if f > 0.0:
            c = plan_coef[d, g, m, s, kk, p]
            work += f * (c[PC_WORK] * P + c[PC_WORK + 1] * O)
            attn = max(attn, f * c[PC_WORK + 2])
            server_j += f * (c[PC_ENERGY] * P + c[PC_ENERGY + 1] * O + c[PC_ENERGY + 2] * C)
    work += attn * C
    if local:
        work /= freq
    cold = 0.0
    if model_f[m, MF_IS_MOE] > 0 and not local and cache_model[n, g - 1] != m:
        cold = plan_coef[d, g, m, s, 0, p, PC_COLD]
    work += cold
    server_j += cold * tgt_f[g, TG_BUSY_W]
    h = split_coef[d, g, m, s]
    head = (h[SC_HEAD] * P + h[SC_HEAD + 1] * O + h[SC_HEAD + 2] * C) / freq
    dev_power = dev_f[d, DV_STATIC_W] + dev_f[d, DV_DYNAMIC_W] * freq * freq * freq  # DVFS
    # network
    up_s = 0.0
    net_s = 0.0
    if not local:
        rate = min(_wireless_bps(fp, tx, env_f[n, EF_GAIN]), dg[d, g, DG_WIRED_BPS])
        up_s = (h[SC_UP_P] * P + h[SC_UP_O] * O) * 8.0 / rate
        net_s = up_s + (h[SC_TRIPS] + h[SC_TRIPS + 1] * O) * dg[d, g, DG_RTT_S]
    device_j = (work if local else head) * dev_power + up_s * tx
    # processor sharing on the target's resource row
    r = res_of_target[d, g]
    own, added = ps_row_own_added(remaining[n, r, R - busy[n, r] :], work)
    out[0] = own + added + head + net_s
    out[1] = (0.0 if local else server_j) + device_j
    out[2] = work * tgt_f[g, TG_PRICE]
    out[3] = plan_coef[d, g, m, s, k, p, PC_ACCURACY]
    out[4] = work
    out[5] = device_j


@njit(cache=True)
def plan_costs(
    n, plans, fp, env_i, env_f, remaining, busy, cache_model, dg, res_of_target, plan_coef,
    split_coef, model_f, dev_f, tgt_f, ok_st, ok_p, masks, flags, out,
):  # fmt: skip
    """Predicted costs (latency, energy, cost, accuracy) of each plan in ``plans`` (M, 4) for
    env n's current request, all KV on the plan's tier, full frequency, default transmit power;
    a plan that is not open (or any plan while the request is rejected) gets inf."""
    K = ok_st.shape[3]
    frac = np.zeros(K)
    buf = np.empty(6)
    d = env_i[n, RQ_DEVICE]
    for i in range(plans.shape[0]):
        g, s, k, p = plans[i, 0], plans[i, 1], plans[i, 2], plans[i, 3]
        if flags[n, FL_REJECTING] or not (masks[n, g] and ok_st[n, g, s, k] and ok_p[n, g, p]):
            for j in range(4):
                out[i, j] = math.inf
            continue
        for kk in range(K):
            frac[kk] = 1.0 if kk == k else 0.0
        _plan_cost(
            n, g, s, k, p, frac, 1.0, dev_f[d, DV_TX_W], fp, env_i, env_f, remaining, busy,
            cache_model, dg, res_of_target, plan_coef, split_coef, model_f, dev_f, tgt_f, buf,
        )  # fmt: skip
        for j in range(4):
            out[i, j] = buf[j]


@njit(cache=True)
def step_range(
    lo, hi, actions, knobs, blk_size, fp, blk_f, blk_i, env_i, env_f, remaining, kv_bytes, used,
    busy, cache_model, battery, dg, res_of_target, plan_coef, split_coef,
    feas_split, feas_tp, model_f, dev_f, srv_f, tgt_f, slots, updates_cache, objective_index,
    ok_st, ok_p, masks, flags, free, obs, costs, plan, fallback, reward,
):  # fmt: skip
    """The decisions of envs ``lo .. hi - 1``, one after another: for each, the fallback of
    masked parts, costs, processor sharing and placement, then its clock to the next arrival
    and that request's masks and observation.

    ``knobs[n]``: device frequency ratio, transmit power W (<= 0: the device default), then the
    KV share per tier (a negative first share: all on the action's tier).
    Returns 1 when some env has used up its block of requests (it is left before the advance;
    the caller refills its block and calls :func:`prepare` with advance), else 0.
    """
    G = ok_st.shape[1]
    K = ok_st.shape[3]
    R = remaining.shape[2]
    frac = np.empty(K)
    out = np.empty(6)
    refill = 0
    for n in range(lo, hi):
        d, m = env_i[n, RQ_DEVICE], env_i[n, RQ_MODEL]
        P, O = float(env_i[n, RQ_PROMPT]), float(env_i[n, RQ_OUTPUT])
        rej = flags[n, FL_REJECTING]
        g, s, k, p = actions[n, 0], actions[n, 1], actions[n, 2], actions[n, 3]
        for j in range(4):
            fallback[n, j] = False
        # ---- documented fallback of masked parts
        if rej:
            g = 0
        elif not masks[n, g]:
            fallback[n, 0] = True
            g = _first_true(masks[n, :G])
        if not _any(ok_st[n, g, s]):
            fallback[n, 1] = not rej
            s = 0
            for ss in range(ok_st.shape[2]):
                if _any(ok_st[n, g, ss]):
                    s = ss
                    break
        if not ok_st[n, g, s, k]:
            fallback[n, 2] = not rej
            k = _first_true(ok_st[n, g, s])
        if not ok_p[n, g, p]:
            fallback[n, 3] = not rej
            p = _first_true(ok_p[n, g])
        # ---- knobs: KV share over the tiers open for (g, s), frequency, transmit power
        if knobs[n, 2] < 0.0:
            for kk in range(K):
                frac[kk] = 1.0 if kk == k else 0.0
        else:
            total = 0.0
            for kk in range(K):
                frac[kk] = max(knobs[n, 2 + kk], 0.0) if ok_st[n, g, s, kk] else 0.0
                total += frac[kk]
            best = k
            for kk in range(K):
                frac[kk] = frac[kk] / total if total > 0.0 else (1.0 if kk == k else 0.0)
                if frac[kk] > frac[best]:
                    best = kk
            k = best  # the plan reports the tier holding the largest share
        plan[n, 0], plan[n, 1], plan[n, 2], plan[n, 3] = g, s, k, p
        freq = knobs[n, 0]
        tx = knobs[n, 1] if knobs[n, 1] > 0.0 else dev_f[d, DV_TX_W]
        local = g == 0
        r = res_of_target[d, g]
        _plan_cost(
            n, g, s, k, p, frac, freq, tx, fp, env_i, env_f, remaining, busy, cache_model, dg,
            res_of_target, plan_coef, split_coef, model_f, dev_f, tgt_f, out,
        )  # fmt: skip
        work, device_j = out[4], out[5]
        if rej:
            costs[n, 0], costs[n, 1], costs[n, 2], costs[n, 3] = fp[FP_PENALTY_S], 0.0, 0.0, 0.0
        else:
            for j in range(4):
                costs[n, j] = out[j]
            # place: the row is sorted ascending with empties first and has a free slot (mask)
            kv_total = split_coef[d, g, m, s, SC_KV] * (P + O) + split_coef[d, g, m, s, SC_HELD]
            q = R - busy[n, r] - 1  # the last empty slot
            while q + 1 < R and remaining[n, r, q + 1] < work:
                remaining[n, r, q] = remaining[n, r, q + 1]
                for kk in range(K):
                    kv_bytes[n, r, q, kk] = kv_bytes[n, r, q + 1, kk]
                q += 1
            remaining[n, r, q] = work
            busy[n, r] += 1
            for kk in range(K):
                kv_bytes[n, r, q, kk] = kv_total * frac[kk]
                used[n, r, kk] += kv_total * frac[kk]
            if model_f[m, MF_IS_MOE] > 0 and not local and updates_cache[p]:
                cache_model[n, g - 1] = m
            battery[n, d] = max(battery[n, d] - device_j, 0.0)
        for j in range(objective_index.shape[0]):
            reward[n, j] = -costs[n, objective_index[j]]
        flags[n, FL_REJECTED] = rej
        env_i[n, CT_T] += 1
        env_i[n, CT_POS] += 1
        flags[n, FL_TRUNCATED] = env_i[n, CT_T] >= fp[FP_EPISODE]
        if env_i[n, CT_POS] >= blk_size:
            refill = 1
            continue
        _advance(n, fp, blk_f, env_i, env_f, remaining, kv_bytes, used, busy)
        _prepare(
            n, fp, blk_f, blk_i, env_i, env_f, remaining, used, busy, cache_model, battery,
            dg, res_of_target, split_coef, feas_split, feas_tp, model_f, dev_f, srv_f, slots,
            ok_st, ok_p, masks, flags, free, obs,
        )  # fmt: skip
    return refill


@njit(cache=True)
def step(
    actions, nvec, knobs, blk_size, fp, blk_f, blk_i, env_i, env_f, remaining, kv_bytes, used,
    busy, cache_model, battery, dg, res_of_target, plan_coef, split_coef,
    feas_split, feas_tp, model_f, dev_f, srv_f, tgt_f, slots, updates_cache, objective_index,
    ok_st, ok_p, masks, flags, free, obs, costs, plan, fallback, reward,
):  # fmt: skip
    """One decision for every env (:func:`step_range` over all of them).

    Returns ``-1 - (4 n + part)`` for the first action part out of range, before changing
    anything; else :func:`step_range`'s refill flag.
    """
    code = _check_actions(actions, nvec)
    if code < 0:
        return code
    return step_range(
        0, actions.shape[0], actions, knobs, blk_size, fp, blk_f, blk_i, env_i, env_f, remaining, kv_bytes, used,
        busy, cache_model, battery, dg, res_of_target, plan_coef, split_coef,
        feas_split, feas_tp, model_f, dev_f, srv_f, tgt_f, slots, updates_cache, objective_index,
        ok_st, ok_p, masks, flags, free, obs, costs, plan, fallback, reward,
    )  # fmt: skip


@njit(cache=True, parallel=True)
def step_parallel(
    chunks, actions, nvec, knobs, blk_size, fp, blk_f, blk_i, env_i, env_f, remaining, kv_bytes, used,
    busy, cache_model, battery, dg, res_of_target, plan_coef, split_coef,
    feas_split, feas_tp, model_f, dev_f, srv_f, tgt_f, slots, updates_cache, objective_index,
    ok_st, ok_p, masks, flags, free, obs, costs, plan, fallback, reward,
):  # fmt: skip
    """:func:`step` with the envs split into ``chunks`` contiguous chunks run on numba's threads
    (envs are independent, so the result is the same as the serial loop's, bit for bit)."""
    code = _check_actions(actions, nvec)
    if code < 0:
        return code
    N = actions.shape[0]
    refill = np.zeros(chunks, np.int64)
    for c in prange(chunks):
        refill[c] = step_range(
            c * N // chunks, (c + 1) * N // chunks, actions, knobs, blk_size, fp, blk_f, blk_i, env_i, env_f, remaining, kv_bytes, used,
                busy, cache_model, battery, dg, res_of_target, plan_coef, split_coef,
                feas_split, feas_tp, model_f, dev_f, srv_f, tgt_f, slots, updates_cache, objective_index,
                ok_st, ok_p, masks, flags, free, obs, costs, plan, fallback, reward,
        )  # fmt: skip
    return 1 if refill.max() > 0 else 0


@njit(cache=True)
def target_costs(
    fp, env_i, env_f, remaining, busy, cache_model, dg, res_of_target, plan_coef, split_coef,
    model_f, dev_f, tgt_f, ok_st, ok_p, masks, flags, objective_index, out,
):  # fmt: skip
    """For every env n and target g: ``out[n, g, j, :]`` = the objectives' costs of the open
    plan on g that is cheapest in objective j (the first in index order on ties), as
    :func:`plan_costs` predicts them; inf where g is closed or the request is rejected.
    ``out`` is (N, G, O, O) with O = len(objective_index)."""
    N, G, NS, K = ok_st.shape
    NP = ok_p.shape[2]
    O = objective_index.shape[0]
    frac = np.zeros(K)
    buf = np.empty(6)
    for n in range(N):
        out[n] = math.inf
        if flags[n, FL_REJECTING]:
            continue
        d = env_i[n, RQ_DEVICE]
        tx = dev_f[d, DV_TX_W]
        for g in range(G):
            if not masks[n, g]:
                continue
            best = out[n, g]
            for s in range(NS):
                for k in range(K):
                    if not ok_st[n, g, s, k]:
                        continue
                    for kk in range(K):
                        frac[kk] = 1.0 if kk == k else 0.0
                    for p in range(NP):
                        if not ok_p[n, g, p]:
                            continue
                        _plan_cost(
                            n, g, s, k, p, frac, 1.0, tx, fp, env_i, env_f, remaining, busy,
                            cache_model, dg, res_of_target, plan_coef, split_coef, model_f,
                            dev_f, tgt_f, buf,
                        )  # fmt: skip
                        for j in range(O):
                            if buf[objective_index[j]] < best[j, j]:
                                for i in range(O):
                                    best[j, i] = buf[objective_index[i]]
