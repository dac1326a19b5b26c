"""The external-agent examples run as a user runs them, with tiny budgets."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_sb3_ppo_example():
    result = run("examples/sb3_ppo.py", "--timesteps", "512")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scalarised return" in result.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("sb3_contrib") is None, reason="sb3-contrib not installed"
)
def test_maskable_ppo_example():
    result = run("examples/maskable_ppo.py", "--timesteps", "512")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MaskablePPO" in result.stdout


def test_morl_baselines_envelope_example_runs(tmp_path):
    pytest.importorskip("morl_baselines", reason="optional extra: pip install -e '.[morl]'")
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "morl_baselines_envelope.py"),
         "--timesteps", "300", "--episodes", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Envelope w = [1.0, 0.0]" in result.stdout and "random:" in result.stdout


@pytest.mark.parametrize("algo", ["dsac", "ddpg"])
def test_plan_mix_counts_every_served_request(tmp_path, algo):
    """examples/plan_mix.py on a tiny run: per preference and method, the requests on each
    target plus the rejected ones add up to the episode length; bad input exits 2."""
    out = tmp_path / "tiny"
    trained = subprocess.run(
        [sys.executable, "train.py", "--scenario", "tiny", "--timesteps", "96", "--num-envs",
         "4", "--eval-every", "96", "--eval-preferences", "2", "--no-progress", "--out",
         str(out), "--cost-features", "--algo", algo],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = run("examples/plan_mix.py", str(out), "--preferences", "1,0", "0,1", "--episodes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        r.split("|")[1:-1]
        for r in result.stdout.splitlines()
        if r.startswith("| 0,1") or r.startswith("| 1,0")
    ]
    label = {"dsac": "Discrete-SAC [tiny]", "ddpg": "DDPG [tiny]"}[algo]
    assert [r[1].strip() for r in rows] == [label, "greedy"] * 2
    for r in rows:
        rejected, targets = float(r[2]), [float(x) for x in r[5:]]
        assert rejected + sum(targets) == pytest.approx(8.0)  # tiny: 8 requests per episode
    for args, fragment in (
        (["--preferences", "1,0,0"], "--preferences"),
        (["--episodes", "ten"], "--episodes"),
    ):
        bad = run("examples/plan_mix.py", str(out), *args)
        assert bad.returncode == 2 and fragment in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
