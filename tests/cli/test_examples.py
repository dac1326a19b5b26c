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
