"""evaluate.py run as a user runs it: fronts, metrics, files, plots, held-out scenarios, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def run(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def train(out: Path, *extra: str) -> Path:
    result = run(
        "train.py",
        "--timesteps",
        "96",
        "--num-envs",
        "4",
        "--eval-every",
        "96",
        "--eval-preferences",
        "2",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("runs") / "dsac-tiny", "--scenario", "tiny")


def test_evaluates_a_run_and_baselines_into_files(tiny_run, tmp_path):
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", str(tiny_run), "--baselines", "greedy,random,all-local",
        "--preferences", "5", "--episodes", "2", "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["seeds"] == [1000, 1001] and len(doc["preferences"]) == 5
    (scenario,) = doc["scenarios"].values()
    methods = set(scenario["metrics"])
    assert methods == {"Discrete-SAC [dsac-tiny]", "greedy", "random", "all-local"}
    for name, m in scenario["metrics"].items():
        assert 0.0 <= m["hypervolume"] <= 1.0, name
        assert m["cardinality"] >= 1
        assert len(scenario["returns"][name]) == 5
    # a preference-blind baseline plays the same episodes for every preference: one point
    local = scenario["returns"]["all-local"]
    assert all(row == local[0] for row in local)
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == methods
    assert "mean_return_latency" in rows[0]
    assert (out / "front.png").stat().st_size > 10_000
    assert "| greedy |" in (out / "results.md").read_text()
    assert "hypervolume" in result.stdout and "results:" in result.stdout


def test_a_conditional_plan_run_resumes_and_is_evaluated(tmp_path):
    """--plan-head and --critic-split are kept in the run (resume continues with them) and
    evaluate.py rebuilds those networks from the checkpoint."""
    import torch

    out = train(
        tmp_path / "cond", "--scenario", "tiny", "--plan-head", "conditional",
        "--critic-split", "plan",
    )  # fmt: skip
    again = run("train.py", "--resume", str(out), "--timesteps", "192", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 192 and ckpt["agent"]["config"]["plan_head"] == "conditional"
    assert ckpt["agent"]["config"]["split_reward"] is True
    assert ckpt["agent"]["config"]["continuation"] == "plan"
    result = run(
        "evaluate.py", str(out), "--baselines", "random", "--preferences", "3", "--episodes", "1",
        "--out", str(tmp_path / "eval"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "eval" / "results.json").read_text())
    (scenario,) = doc["scenarios"].values()
    assert "Discrete-SAC [cond]" in scenario["metrics"]


def test_a_run_from_before_the_plan_head_options_still_evaluates_and_resumes(tmp_path):
    """Runs saved before --plan-head / --critic-split (no such keys in their config or
    checkpoint) are factorised with one Q per objective, and load as such."""
    import torch
    import yaml

    out = train(
        tmp_path / "old",
        "--scenario",
        "tiny",
        "--plan-head",
        "factorised",
        "--critic-split",
        "none",
    )
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    for key in ("plan_head", "split_reward", "continuation"):
        del ckpt["agent"]["config"][key]
    for key in ("plan_head", "critic_split"):
        del ckpt["options"][key]
    torch.save(ckpt, out / "checkpoint.pt")
    doc = yaml.safe_load((out / "config.yaml").read_text())
    for key in ("plan_head", "critic_split"):
        del doc["options"][key]
    (out / "config.yaml").write_text(yaml.safe_dump(doc))
    result = run(
        "evaluate.py", str(out), "--baselines", "none", "--preferences", "2", "--episodes", "1",
        "--out", str(tmp_path / "eval"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    again = run("train.py", "--resume", str(out), "--timesteps", "192", "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    # a config.yaml that no longer matches the checkpoint: exit 2, one line, nothing lost
    doc["options"]["plan_head"] = "conditional"
    (out / "config.yaml").write_text(yaml.safe_dump(doc))
    before = (out / "checkpoint.pt").read_bytes()
    bad = run("train.py", "--resume", str(out), "--timesteps", "288", "--no-progress")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "does not fit" in bad.stderr and "Traceback" not in bad.stderr
    assert (out / "checkpoint.pt").read_bytes() == before


def test_held_out_scenarios_report_the_gap_to_a_policy_trained_there(tiny_run, tmp_path):
    import yaml

    from mec_env import load_scenario

    variant = load_scenario("tiny").replace(name="tiny-slow-edge")
    variant_doc = yaml.safe_load(variant.to_yaml())
    variant_doc["workload"]["arrival_rate_hz"] = 0.2
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(variant_doc))
    trained_there = train(tmp_path / "dsac-variant", "--scenario", str(path))
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", str(tiny_run), "--baselines", "none", "--preferences", "3",
        "--episodes", "1", "--eval-scenarios", str(path), "--reference-runs", str(trained_there),
        "--out", str(out), "--no-progress", "--no-plot",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    held = doc["scenarios"]["scenario 'tiny-slow-edge'"]
    assert held["held_out"]
    gap = held["metrics"]["Discrete-SAC [dsac-tiny]"]["gap_to_trained_on_variant"]
    ours = held["metrics"]["Discrete-SAC [dsac-tiny]"]["hypervolume"]
    theirs = held["metrics"][f"trained on this variant: Discrete-SAC [{trained_there.name}]"][
        "hypervolume"
    ]
    assert gap == pytest.approx((theirs - ours) / theirs)
    assert "gap to the policy trained on this variant" in result.stdout


def nadir(point_sets) -> list[float]:
    """Worst value of each objective over the Pareto fronts (returns: larger is better) of
    the point sets: a point another point of its own set dominates does not count."""

    def dominated(p, q):
        return all(b >= a for a, b in zip(p, q, strict=True)) and any(
            b > a for a, b in zip(p, q, strict=True)
        )

    front = [p for ps in point_sets for p in ps if not any(dominated(p, q) for q in ps)]
    return [min(p[k] for p in front) for k in range(len(front[0]))]


def test_nadir_ignores_dominated_points():
    assert nadir([[[0, -5], [-1, -6], [-4, 0]], [[-2, -2]]]) == [-4, -5]


def test_gmorl_protocol_uses_the_worst_point_as_reference(tmp_path):
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", "--env", "gmorl", "--gmorl-edges", "2", "--gmorl-cloud-ghz", "4",
        "--gmorl-edge-ghz", "2", "--baselines", "random,all-cloud,round-robin",
        "--preferences", "3", "--episodes", "1", "--out", str(out), "--no-progress",
        "--eval-scenarios", "ranges=test",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["reference"] == "worst"
    first = next(iter(doc["scenarios"].values()))
    assert first["reference_point_raw"] == pytest.approx(nadir(first["returns"].values()))
    assert len(doc["scenarios"]) == 2
    assert (out / "front.png").is_file() and (
        out / "front-GMORLOffload-v0-ranges-test.png"
    ).is_file()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["/no/such/run"], "no such directory"),
        (["--baselines", "clever"], "unknown baseline 'clever'"),
        (["--env", "gmorl", "--baselines", "all-local"], "does not apply"),
        (["--episodes", "0"], "--episodes"),
        (["--scenario", "no-such-scenario"], "--scenario"),
        (["--env", "gmorl", "--eval-scenarios", "speed=3"], "--eval-scenarios"),
        (["--baselines", "none"], "nothing to evaluate"),
        (["--baselines", "random", "--compare-to", "greedy"], "--compare-to: 'greedy' is not"),
        (
            ["--baselines", "random,greedy", "--compare-to", "greedy", "--episodes", "1"],
            "--compare-to needs --episodes >= 2",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    result = run("evaluate.py", *args, "--out", str(tmp_path / "e"), "--no-progress")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_checkpoint_that_does_not_fit_the_scenario_exits_2(tiny_run, tmp_path):
    result = run(
        "evaluate.py", str(tiny_run), "--scenario", "default", "--baselines", "none",
        "--out", str(tmp_path / "e"), "--no-progress",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "do not fit the observation space" in lines[0], result.stderr


def test_a_missing_checkpoint_file_exits_2(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text("options: {}\n")
    result = run("evaluate.py", str(tmp_path / "broken"), "--out", str(tmp_path / "e"))
    assert result.returncode == 2
    assert "missing checkpoint.pt" in result.stderr and "Traceback" not in result.stderr


def test_oracle_front_bounds_every_method_on_a_tiny_instance(tmp_path):
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", "--scenario", "tiny", "--episode-requests", "3", "--oracle",
        "--baselines", "greedy,random,all-offload", "--preferences", "5", "--episodes", "2",
        "--out", str(out), "--no-progress", "--no-plot",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exhaustive search over 2 episodes (exact)" in result.stdout
    (scenario,) = json.loads((out / "results.json").read_text())["scenarios"].values()
    metrics, returns = scenario["metrics"], scenario["returns"]
    oracle = metrics["oracle (clairvoyant)"]
    assert oracle["igd_to_oracle"] == pytest.approx(0.0, abs=1e-12)
    for name in ("greedy", "random", "all-offload"):
        assert metrics[name]["hypervolume"] <= oracle["hypervolume"] + 1e-12
        assert metrics[name]["igd_to_oracle"] >= 0.0
        for point in returns[name]:  # every mean return is weakly dominated by an oracle point
            assert any(
                all(o >= p - 1e-9 for o, p in zip(front_point, point, strict=True))
                for front_point in returns["oracle (clairvoyant)"]
            ), (name, point)


def test_gmorl_side_by_side_with_per_preference_policies_and_unseen_frequencies(tmp_path):
    """The README's GMORL comparison at a tiny budget: one preference-conditioned policy,
    per-preference policies (each evaluated at its own preference), baselines, and the gap on
    the unseen (testing) ranges to a policy trained on them."""
    gmorl = ["--env", "gmorl", "--gmorl-edges", "2"]
    ours = train(tmp_path / "ours", *gmorl)
    fixed = [train(tmp_path / f"w{w}", *gmorl, "--preferences", f"{w},{1 - w}") for w in (0, 1)]
    trained_on_test = train(tmp_path / "test-ranges", "--env", "gmorl", "--gmorl-ranges", "test")
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", str(ours), "--per-preference-runs", *map(str, fixed),
        "--env", "gmorl", "--gmorl-edges", "2", "--baselines", "random,all-cloud",
        "--preferences", "3", "--episodes", "1", "--eval-scenarios", "ranges=test",
        "--reference-runs", str(trained_on_test), "--out", str(out), "--no-progress", "--no-plot",
        "--reference-set", "learned-and-random",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    main, held = doc["scenarios"].values()
    paper_set = ["Discrete-SAC [ours]", "per-preference policies (2)", "random"]
    worst = nadir(main["returns"][m] for m in paper_set)
    assert main["reference_point_raw"] == pytest.approx(worst)  # all-cloud does not set it
    assert len(main["returns"]["per-preference policies (2)"]) == 2
    assert {"Discrete-SAC [ours]", "random", "all-cloud"} <= set(main["metrics"])
    assert held["metrics"]["Discrete-SAC [ours]"]["gap_to_trained_on_variant"] is not None


def test_gmorl_cost_feature_runs_are_evaluated_beside_plain_runs(tmp_path):
    """A run trained with --gmorl-cost-features gets its wider observation, a plain run and the
    baselines the paper's, in one evaluation; with two runs trained on the unseen ranges (one
    of each kind, the cost-feature one with --gmorl-relative-costs and --critic-split observed,
    whose networks evaluate.py rebuilds from its config), every gap is to the better of them."""
    gmorl = ["--env", "gmorl", "--gmorl-edges", "2"]
    cf = train(tmp_path / "cf", *gmorl, "--gmorl-cost-features")
    plain = train(tmp_path / "plain", *gmorl)
    cf_test = train(
        tmp_path / "cf-test", "--env", "gmorl", "--gmorl-ranges", "test", "--gmorl-cost-features",
        "--gmorl-relative-costs", "--critic-split", "observed",
    )  # fmt: skip
    plain_test = train(tmp_path / "plain-test", "--env", "gmorl", "--gmorl-ranges", "test")
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", str(cf), str(plain), *gmorl, "--baselines", "random,greedy",
        "--preferences", "3", "--episodes", "1", "--eval-scenarios", "ranges=test",
        "--reference-runs", str(cf_test), str(plain_test), "--out", str(out), "--no-progress",
        "--no-plot",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    held = list(json.loads((out / "results.json").read_text())["scenarios"].values())[1]
    m = held["metrics"]
    refs = [m[f"trained on this variant: Discrete-SAC [{r}]"] for r in ("cf-test", "plain-test")]
    hv_ref = max(r["hypervolume"] for r in refs)
    for name in ("Discrete-SAC [cf]", "Discrete-SAC [plain]", "greedy"):
        gap = (hv_ref - m[name]["hypervolume"]) / hv_ref
        assert m[name]["gap_to_trained_on_variant"] == pytest.approx(gap)


def test_main_env_cost_feature_run_is_evaluated_beside_a_plain_run(tiny_run, tmp_path):
    """A run trained with --cost-features (DDPG too) gets its wider observation, a plain run
    and the baselines the plain one, in one evaluation; a cost-feature checkpoint does not fit
    a plain env, so evaluate.py must build the right one."""
    import yaml

    cf = train(tmp_path / "cf", "--scenario", "tiny", "--cost-features")
    ddpg = train(tmp_path / "cf-ddpg", "--scenario", "tiny", "--cost-features", "--algo", "ddpg")
    assert yaml.safe_load((cf / "config.yaml").read_text())["options"]["cost_features"] is True
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", str(cf), str(tiny_run), str(ddpg), "--baselines", "greedy",
        "--preferences", "3", "--episodes", "2", "--out", str(out), "--no-progress", "--no-plot",
        "--compare-to", "dsac-tiny",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (scenario,) = json.loads((out / "results.json").read_text())["scenarios"].values()
    # --compare-to by a run's directory name: the other methods against that run
    for name in ("Discrete-SAC [cf]", "DDPG [cf-ddpg]", "greedy"):
        assert scenario["metrics"][name]["compare_to"]["method"] == "Discrete-SAC [dsac-tiny]"
    assert set(scenario["metrics"]) == {
        "Discrete-SAC [cf]", "Discrete-SAC [dsac-tiny]", "DDPG [cf-ddpg]", "greedy",
    }  # fmt: skip


def test_compare_to_gives_paired_differences_with_intervals(tiny_run, tmp_path):
    """--compare-to: every other method gets its hypervolume and expected utility minus the
    base's, exactly the table's difference, with a 95 % interval; random, far below greedy on
    every episode, has one below 0."""
    out = tmp_path / "eval"
    result = run(
        "evaluate.py", str(tiny_run), "--baselines", "greedy,random", "--preferences", "5",
        "--episodes", "4", "--compare-to", "greedy", "--out", str(out), "--no-progress",
        "--no-plot",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (scenario,) = json.loads((out / "results.json").read_text())["scenarios"].values()
    m = scenario["metrics"]
    base = "greedy"
    assert "compare_to" not in m[base]
    for name in ("Discrete-SAC [dsac-tiny]", "random"):
        c = m[name]["compare_to"]
        assert c["method"] == base
        assert c["hypervolume_diff"] == pytest.approx(
            m[name]["hypervolume"] - m[base]["hypervolume"]
        )
        assert c["expected_utility_diff"] == pytest.approx(
            m[name]["expected_utility"] - m[base]["expected_utility"]
        )
        for key in ("hypervolume_diff_ci95", "expected_utility_diff_ci95"):
            assert c[key][0] <= c[key][1]
    assert m["random"]["compare_to"]["expected_utility_diff_ci95"][1] < 0
    assert "random - greedy: hypervolume" in result.stdout


def test_paired_bootstrap_of_identical_and_shifted_methods():
    sys.path.insert(0, str(REPO))
    from evaluate import paired_bootstrap

    rng = np.random.default_rng(0)
    base = -rng.uniform(0.2, 0.8, (6, 5, 2))  # 6 episodes, 5 preferences, 2 objectives
    box = ("scenario", np.array([-1.0, -1.0]), np.array([0.0, 0.0]), np.array([-0.1, -0.1]))
    same = paired_bootstrap(base, base.copy(), box, resamples=200)
    assert same["hypervolume_diff"] == 0.0 and same["hypervolume_diff_ci95"] == [0.0, 0.0]
    # better by 0.05 in both objectives on every episode: the whole interval is above 0
    better = paired_bootstrap(base + 0.05, base, box, resamples=200)
    assert better["hypervolume_diff"] > 0 and better["hypervolume_diff_ci95"][0] > 0
    assert better["expected_utility_diff"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="same >= 2 episodes"):
        paired_bootstrap(base[:1], base[:1], box)
