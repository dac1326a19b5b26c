"""Profiler CLI: writes a YAML profile whose server: section is a valid ServerSpec."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from devices.profile import load_profile, profile_to_server_spec
from mec_env.hardware import ServerSpec
from mec_env.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]


def run_profile(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devices.profile", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def numbers(tree: object, path: str = ""):
    """(path, value) of every int/float leaf (bools excluded)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profile") / "p.yaml"
    t0 = time.perf_counter()
    proc = run_profile("--quick", "--out", str(out))
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and str(out) in proc.stdout
    # --quick is meant to take under 10 s; allow for a loaded shared test machine.
    assert elapsed < 30.0, elapsed
    return out


def test_profile_yaml_is_a_valid_server_spec(profile_path: Path) -> None:
    data = yaml.safe_load(profile_path.read_text())
    assert set(data) == {"server", "measured", "machine", "nominal"}
    spec = profile_to_server_spec(data)
    assert isinstance(spec, ServerSpec)
    assert (
        spec
        == profile_to_server_spec(profile_path)
        == profile_to_server_spec(load_profile(profile_path))
    )
    assert spec.ssd is not None and spec.csd is None
    assert spec.gpu.flops > 1e8 and spec.host.dram_gbps > 0.05
    assert data["machine"]["cores"] >= 1 and data["machine"]["quick"] is True
    if not data["measured"].get("gpu"):  # CPU-only: the "gpu" is the CPU
        assert spec.gpu.hbm_gbps == data["measured"]["memory_read_gbps"]
        assert spec.gpu.flops == max(data["measured"]["cpu_matmul_flops"].values())
        assert spec.gpu_host_gbps == data["measured"]["memcpy_gbps"]


@pytest.mark.gpu
def test_cuda_section_when_available(profile_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    data = load_profile(profile_path)
    gpu = data["measured"]["gpu"]
    assert gpu["name"] == torch.cuda.get_device_name(0)
    half = [gpu["matmul_flops"][k] for k in ("bfloat16", "float16") if k in gpu["matmul_flops"]]
    assert data["server"]["gpu"]["flops"] == max(half)
    assert data["server"]["gpu"]["hbm_gbps"] == gpu["hbm_read_gbps"]
    assert data["server"]["gpu_host_gbps"] == gpu["h2d_gbps"]


def test_profile_figures_positive(profile_path: Path) -> None:
    data = load_profile(profile_path)
    for section in ("server", "measured"):
        for path, value in numbers(data[section], section):
            if not path.endswith("rel_error"):
                assert value > 0, f"{path} = {value}"
    assert data["measured"]["disk_read_method"].split()[0] in (
        "o_direct",
        "fadvise_dontneed",
        "page_cache",
    )


def test_link_pacing_table_close_to_requested(profile_path: Path) -> None:
    rows = load_profile(profile_path)["measured"]["link_pacing"]
    assert len(rows) >= 3
    for row in rows:
        # Pacing never runs fast; a loaded machine can make it slower (loose bound).
        assert 0.5 <= row["achieved_gbps"] / row["requested_gbps"] <= 1.01, row


def test_profile_server_drops_into_a_scenario(profile_path: Path) -> None:
    server = dict(load_profile(profile_path)["server"])
    server["hosted_models"] = ["tinyllama-1.1b"]
    scenario = load_scenario(
        {
            "name": "measured",
            "devices": ["phone"],
            "servers": [server],
            "models": ["tinyllama-1.1b"],
            "workload": {"mix": {"tinyllama-1.1b": 1.0}},
        }
    )
    assert scenario.servers[0].name == server["name"]


@pytest.mark.parametrize(
    "args",
    [
        ("--quick", "--out", "/nonexistent-dir-for-profile-test/p.yaml"),
        ("--quick", "--out", "."),
        ("--quick",),
        ("--quick", "--out", "x.yaml", "--bogus"),
    ],
)
def test_bad_cli_arguments_exit_2_with_one_line(args: tuple[str, ...]) -> None:
    proc = run_profile(*args, timeout=60.0)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert proc.stdout == ""


def test_load_profile_rejects_a_non_profile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("just: [a, list]\n")
    with pytest.raises(ValueError, match="server"):
        load_profile(bad)
    with pytest.raises(ValueError, match="server.gpu.flops"):
        profile_to_server_spec(
            {"server": {"preset": "edge-a6000", "gpu": {"preset": "a6000", "flops": -1.0}}}
        )
