"""Evaluate trained policies and baselines: Pareto fronts, metrics, an oracle, generalisation.

    python evaluate.py runs/dsac-default-s0                        # + every applicable baseline
    python evaluate.py runs/dsac-tiny --episode-requests 4 --oracle  # exact upper bound (tiny)
    python evaluate.py runs/dsac-default-s0 --eval-scenarios three-objective my.yaml
    python evaluate.py --env gmorl --gmorl-edges 6 --gmorl-cloud-ghz 4 --gmorl-edge-ghz 2 \\
        runs/gmorl-dsac --reference-point worst                    # GMORL's protocol
    python evaluate.py --validate runs/dsac-default-s0             # predicted vs measured

Each method (a ``train.py`` run directory, or a baseline name) runs N preferences (101 evenly
spaced for two objectives, a simplex lattice for three) x M episodes with the same seeds
(``--seed .. --seed + M - 1``) for every method. For each method: the mean vector return per
preference, its Pareto front, the hypervolume (normalised with the scenario's published
bounds and reference point; ``--reference-point worst`` uses raw returns and the worst value
of each objective over the compared methods' Pareto fronts, their nadir, as GMORL does),
expected utility, sparsity, cardinality, and, with ``--oracle``, the IGD to the oracle's
front (the clairvoyant upper bound of :mod:`mec_env.oracle`). Writes ``results.json``,
``results.csv``, ``results.md`` and ``front.png`` (``front-<scenario>.png`` per held-out
scenario) into ``--out``.

Generalisation: ``--eval-scenarios`` evaluates every method on held-out variants too (presets
or YAML files for ``--env llm-offload``; ``key=value[,key=value]`` settings of the GMORL env,
e.g. ``ranges=test`` or ``cloud_ghz=5,edge_ghz=2.5``); ``--reference-runs`` names runs trained
on those variants, and the report gives each method's hypervolume gap to them (to the best of
them when several were trained on one variant). A GMORL run trained with
``--gmorl-cost-features`` is evaluated with those observation rows, the others without.

Validation: ``--validate RUN_OR_BASELINE`` executes the policy's decisions on the real PyTorch
backend (:mod:`devices`) and reports predicted against measured latency per decision.

Bad input exits with status 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENV_IDS = {
    ("llm-offload", "dsac"): "mec_env/LLMOffload-v0",
    ("llm-offload", "ddpg"): "mec_env/LLMOffloadContinuous-v0",
    ("llm-offload", None): "mec_env/LLMOffload-v0",
    ("gmorl", "dsac"): "mec_env/GMORLOffload-v0",
    ("gmorl", None): "mec_env/GMORLOffload-v0",
}
GMORL_KEYS = {"num_edges": int, "cloud_ghz": float, "edge_ghz": float, "ranges": str}


def fail(msg: str):
    from mec_env.cli import fail as _fail

    _fail(msg)


def build_parser():
    from mec_env.cli import OneLineArgumentParser

    ap = OneLineArgumentParser(
        prog="evaluate.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="train.py run directories (each holds checkpoint.pt and config.yaml)",
    )
    ap.add_argument(
        "--baselines",
        default="all",
        help="comma-separated baseline names, 'all' (every one that applies to the env) or 'none' (default: %(default)s)",
    )
    ap.add_argument(
        "--env",
        default=None,
        choices=("llm-offload", "gmorl"),
        help="environment family (default: the runs' env, else llm-offload)",
    )
    ap.add_argument(
        "--scenario",
        default=None,
        help="--env llm-offload: preset name or YAML to evaluate on (default: the first run's scenario, else 'default')",
    )
    ap.add_argument(
        "--episode-requests",
        type=int,
        default=None,
        help="override the scenario's requests per episode (small values make --oracle exact)",
    )
    ap.add_argument(
        "--preferences",
        type=int,
        default=None,
        help="evenly spaced preferences: 101 for two objectives, 13 points per simplex edge for three (default)",
    )
    ap.add_argument(
        "--episodes", type=int, default=5, help="episodes per preference (default: %(default)s)"
    )
    ap.add_argument(
        "--seed", type=int, default=1000, help="seed of the first episode (default: %(default)s)"
    )
    ap.add_argument(
        "--reference-point",
        default=None,
        choices=("scenario", "worst"),
        help="scenario: normalised returns, the scenario's published bounds and reference point; worst: raw returns, the worst value of each objective over the compared methods' Pareto fronts (their nadir; GMORL) (default: scenario for llm-offload, worst for gmorl)",
    )
    ap.add_argument(
        "--reference-set",
        default="all",
        choices=("all", "learned-and-random"),
        help="--reference-point worst: the fronts the worst point is taken over: every compared method, or (GMORL's comparison set) the trained runs, per-preference policies and random only; the other methods are then scored against that point (default: %(default)s)",
    )
    ap.add_argument(
        "--compare-to",
        default=None,
        metavar="METHOD",
        help="a baseline name, or a RUN's directory name: report every other method's hypervolume and expected utility minus this one's, with a 95 %% paired bootstrap interval over the episodes (every method plays the same ones; needs --episodes >= 2)",
    )
    ap.add_argument(
        "--oracle",
        action="store_true",
        help="add the clairvoyant oracle (mec_env.oracle; exhaustive on tiny instances, beam search otherwise) and IGD to its front",
    )
    ap.add_argument(
        "--beam-width",
        type=int,
        default=64,
        help="oracle beam width when exhaustive search is too big (default: %(default)s)",
    )
    ap.add_argument(
        "--eval-scenarios",
        nargs="+",
        default=(),
        metavar="SCENARIO",
        help="held-out variants to evaluate on as well (presets/YAML, or GMORL key=value settings)",
    )
    ap.add_argument(
        "--reference-runs",
        nargs="+",
        default=(),
        metavar="RUN",
        help="runs trained on the held-out variants: the report gives each method's gap to them (to the best of them when several match a variant)",
    )
    ap.add_argument(
        "--per-preference-runs",
        nargs="+",
        default=(),
        metavar="RUN",
        help="runs trained with one fixed preference each (train.py --preferences W1,W2): together one method, each run evaluated at its own preference (GMORL's per-preference policies)",
    )
    ap.add_argument("--gmorl-edges", type=int, default=None, help="--env gmorl: edge servers E")
    ap.add_argument("--gmorl-cloud-ghz", type=float, default=None, help="--env gmorl: cloud CPU")
    ap.add_argument("--gmorl-edge-ghz", type=float, default=None, help="--env gmorl: edge CPUs")
    ap.add_argument(
        "--gmorl-ranges",
        default=None,
        choices=("train", "test"),
        help="--env gmorl: the paper's training or testing ranges of E and frequencies",
    )
    ap.add_argument(
        "--validate",
        default=None,
        metavar="RUN_OR_BASELINE",
        help="execute this policy's decisions on the devices/ backend and compare with the simulator",
    )
    ap.add_argument(
        "--validate-decisions",
        type=int,
        default=40,
        help="--validate: decisions to execute (default: %(default)s)",
    )
    ap.add_argument(
        "--profile",
        default=None,
        help="--validate: a hardware profile from `python -m devices.profile` (default: measure now, quick)",
    )
    ap.add_argument("--out", default=None, help="output directory (default: runs/eval-<timestamp>)")
    ap.add_argument("--no-plot", action="store_true", help="skip front.png")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


# ---------------------------------------------------------------------------------------------
# Methods: trained runs and baselines
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A ``train.py`` run directory, read back."""

    path: Path
    options: dict[str, Any]
    checkpoint: dict[str, Any]
    scenario: Any = None  # the training scenario (llm-offload)

    @property
    def algo(self) -> str:
        return self.options["algo"]

    @property
    def env(self) -> str:
        return self.options["env"]

    @property
    def label(self) -> str:
        name = {"dsac": "Discrete-SAC", "ddpg": "DDPG"}[self.algo]
        return f"{name} [{self.path.name}]"


def load_run(path: str) -> Run:
    import torch
    import yaml

    from mec_env import load_scenario

    run = Path(path)
    if not run.is_dir():
        fail(f"run {path!r}: no such directory")
    for name in ("checkpoint.pt", "config.yaml"):
        if not (run / name).is_file():
            fail(f"run {path!r}: missing {name} (is it a train.py --out directory?)")
    try:
        options = yaml.safe_load((run / "config.yaml").read_text())["options"]
        checkpoint = torch.load(run / "checkpoint.pt", weights_only=False, map_location="cpu")
    except Exception as e:  # a truncated or foreign file: say which
        fail(f"run {path!r}: cannot read its checkpoint or config ({type(e).__name__}: {e})")
    scenario = None
    if options.get("env") == "llm-offload":
        scenario = load_scenario(run / "scenario.yaml")
    return Run(run, options, checkpoint, scenario)


@dataclass
class EnvSpec:
    """Which env family and settings to evaluate on."""

    family: str
    scenario: Any = None  # llm-offload: a Scenario
    gmorl: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def make(self, algo: str | None, num_envs: int, run: Run | None = None):
        """A vector env of this spec for ``algo``; for a ``run`` trained with cost features,
        with those observations."""
        import gymnasium as gym

        import mec_env  # noqa: F401

        env_id = ENV_IDS[(self.family, algo)]
        extra = {"cost_features": True} if has_cost_features(run) else {}
        if self.family == "llm-offload":
            return gym.make_vec(
                env_id, num_envs=num_envs, scenario=self.scenario, parallel=False, **extra
            )
        return gym.make_vec(env_id, num_envs=num_envs, **self.gmorl, **extra)


def has_cost_features(run: Run | None) -> bool:
    """Whether ``run`` was trained with cost features (``--cost-features`` on the main env,
    ``--gmorl-cost-features`` on GMORL)."""
    return bool(
        run is not None
        and (run.options.get("gmorl_cost_features") or run.options.get("cost_features"))
    )


def parse_gmorl_variant(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in GMORL_KEYS:
            fail(
                f"--eval-scenarios: GMORL variants are key=value pairs with keys {sorted(GMORL_KEYS)}, got {text!r}"
            )
        try:
            out[key] = GMORL_KEYS[key](value)
        except ValueError:
            fail(f"--eval-scenarios: {key} must be {GMORL_KEYS[key].__name__}, got {value!r}")
    return out


def llm_scenario(source, episode_requests: int | None, what: str):
    from mec_env import load_scenario

    try:
        scenario = load_scenario(source)
        if episode_requests is not None:
            scenario = scenario.replace(episode_requests=episode_requests)
    except (ValueError, OSError) as e:
        fail(f"{what} {str(source)!r}: {e}")
    return scenario


def make_policy(run: Run, spec: EnvSpec, env):
    """The run's deterministic policy acting in ``env``; exit 2 if it cannot act there."""
    from agents.common import first_line
    from agents.ddpg import MODDPG, DDPGConfig
    from agents.dsac import DiscreteSAC, DSACConfig

    space = env.single_observation_space
    try:
        if run.algo == "dsac":
            # the run's networks: its config (plan head, critic outputs), on the CPU
            saved = run.checkpoint["agent"].get("config", {})
            agent = DiscreteSAC(env, DSACConfig(**{**saved, "device": "cpu"}), seed=0)
        else:
            agent = MODDPG(env, DDPGConfig(), seed=0)
        agent.load_state_dict(run.checkpoint["agent"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        fail(
            f"run {str(run.path)!r}: its {run.algo} networks do not fit the observation space {space.shape} "
            f"of {spec.label} ({first_line(e)})"
        )

    def policy(obs, info, weights):
        return agent.act(obs, info.get(agent.mask_key), weights, deterministic=True)

    return policy


def method_names(args, family: str, env) -> list[str]:
    from agents.baselines import BASELINES, applicable_baselines

    if args.baselines == "none":
        return []
    applicable = list(applicable_baselines(env))
    if args.baselines == "all":
        return applicable
    names = [b.strip() for b in args.baselines.split(",") if b.strip()]
    for b in names:
        if b not in BASELINES:
            fail(f"--baselines: unknown baseline {b!r}; known: {', '.join(BASELINES)}")
        if b not in applicable:
            fail(
                f"--baselines: {b!r} does not apply to --env {family}; applicable: {', '.join(applicable)}"
            )
    return names


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


class Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="episode", file=sys.stderr, dynamic_ncols=True)

    def update(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_description(what[:40])
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_method(env, policy, prefs, episodes: int, seed: int, progress: Progress, name: str):
    """Returns per episode and preference, (episodes, P, d); episode e is seed ``seed + e``."""
    from agents.evaluation import episode_returns

    out = np.zeros((episodes, len(prefs), int(env.reward_dim)))
    for ep in range(episodes):
        out[ep] = episode_returns(env, policy, prefs, 1, seed + ep)
        progress.update(name)
    return out


def evaluate_on(
    spec: EnvSpec, runs: list[Run], baselines: list[str], prefs, args, progress, fixed=()
):
    """Returns per episode and preference of every method on one scenario: name ->
    (episodes, P, d) (the mean over axis 0 is the method's front); the ``fixed``-preference runs
    together give one method, each run at its own preference."""
    from agents.baselines import make_baseline

    fronts: dict[str, np.ndarray] = {}
    envs = {}
    try:
        if fixed:
            points = []
            for run in fixed:
                env = spec.make(run.algo, 1, run)
                try:
                    w = np.asarray([run.options["fixed_preference"]], np.float32)
                    points.append(
                        run_method(env, make_policy(run, spec, env), w, args.episodes,
                                   args.seed, progress, run.label)[:, 0]
                    )  # fmt: skip
                finally:
                    env.close()
            fronts[f"per-preference policies ({len(fixed)})"] = np.stack(points, axis=1)
        for run in runs:
            key = (run.algo, has_cost_features(run))
            if key not in envs:
                envs[key] = spec.make(run.algo, len(prefs), run)
            policy = make_policy(run, spec, envs[key])
            fronts[run.label] = run_method(
                envs[key], policy, prefs, args.episodes, args.seed, progress, run.label
            )
        if baselines:
            if ("dsac", False) not in envs:  # baselines act in the discrete env
                envs[("dsac", False)] = spec.make("dsac", len(prefs))
            env = envs[("dsac", False)]
            for name in baselines:
                b = make_baseline(name, env, seed=args.seed)
                fronts[name] = run_method(
                    env, b.act_batch, prefs, args.episodes, args.seed, progress, name
                )
    finally:
        for env in envs.values():
            env.close()
    return fronts


def metrics_table(fronts, spec: EnvSpec, reference: str, oracle_front=None, reference_set=None):
    """Per method: hypervolume, expected utility, sparsity, cardinality (+ IGD to the oracle).
    ``reference_set``: the methods whose fronts set the worst point (None: all)."""
    from mec_env import pareto

    if reference == "worst":
        # the nadir of the compared Pareto fronts: a method's dominated points are not part of
        # its front, so they cannot stretch the box
        keys = [k for k in fronts if reference_set is None or k in reference_set] or list(fronts)
        everything = np.concatenate([pareto.pareto_front(fronts[k]) for k in keys])
        low = everything.min(axis=0)
        high = everything.max(axis=0)
        ref = low.copy()
        ref_raw = ref
    else:
        o = spec.scenario.objectives
        low, high = np.array(o.return_low), np.array(o.return_high)
        ref = np.array(o.reference_point)
        ref_raw = low + ref * (high - low)
    box = (reference, low, high, ref)
    oracle_norm = None
    if oracle_front is not None:
        oracle_norm = (
            pareto.normalise(oracle_front, low, high) if reference == "scenario" else oracle_front
        )
    rows = {}
    for name, pts in fronts.items():
        front, unit = front_in_box(pts, box)
        row = {
            "hypervolume": float(pareto.hypervolume(front, ref)),
            "expected_utility": float(pareto.expected_utility(unit)),
            "sparsity": float(pareto.sparsity(unit)),
            "cardinality": int(pareto.cardinality(front)),
        }
        if oracle_norm is not None:
            unit_oracle = (
                pareto.normalise(oracle_norm, low, high) if reference == "worst" else oracle_norm
            )
            row["igd_to_oracle"] = float(pareto.igd(unit, pareto.pareto_front(unit_oracle)))
        row["mean_return"] = [float(x) for x in np.asarray(fronts[name]).mean(axis=0)]
        rows[name] = row
    return rows, ref_raw, box


def front_in_box(points, box) -> tuple[np.ndarray, np.ndarray]:
    """(Pareto front in the hypervolume's frame, the same front normalised to [0, 1]) of a
    method's mean returns per preference, in the reference frame ``box`` = (reference kind,
    low, high, reference point) of :func:`metrics_table`: raw returns under the worst point,
    normalised ones under the scenario's bounds. Expected utility and sparsity use the second
    whatever the reference."""
    from mec_env import pareto

    reference, low, high, _ = box
    pts = np.asarray(points) if reference == "worst" else pareto.normalise(points, low, high)
    front = pareto.pareto_front(pts)
    return front, (pareto.normalise(front, low, high) if reference == "worst" else front)


def hv_eu(points, box) -> tuple[float, float]:
    """(hypervolume, expected utility) of a method's mean returns per preference in ``box``
    (:func:`front_in_box`)."""
    from mec_env import pareto

    front, unit = front_in_box(points, box)
    return float(pareto.hypervolume(front, box[3])), float(pareto.expected_utility(unit))


def paired_bootstrap(
    episodes: np.ndarray, base: np.ndarray, box, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Hypervolume and expected utility of a method minus a base method's, both evaluated on
    the same episodes (arrays (episodes, P, d)), with 95 % percentile intervals from
    ``resamples`` paired bootstrap resamples of the episodes (the same draw for both)."""
    if episodes.shape[0] != base.shape[0] or episodes.shape[0] < 2:
        raise ValueError(
            f"a paired bootstrap needs the same >= 2 episodes for both, got {episodes.shape[0]} "
            f"and {base.shape[0]}"
        )
    rng = np.random.default_rng(seed)
    n = episodes.shape[0]
    diffs = np.empty((resamples, 2))
    for i in range(resamples):
        idx = rng.integers(0, n, n)
        a, b = hv_eu(episodes[idx].mean(0), box), hv_eu(base[idx].mean(0), box)
        diffs[i] = (a[0] - b[0], a[1] - b[1])
    point = np.subtract(hv_eu(episodes.mean(0), box), hv_eu(base.mean(0), box))
    lo, hi = np.percentile(diffs, [2.5, 97.5], axis=0)
    return {
        "hypervolume_diff": float(point[0]),
        "hypervolume_diff_ci95": [float(lo[0]), float(hi[0])],
        "expected_utility_diff": float(point[1]),
        "expected_utility_diff_ci95": [float(lo[1]), float(hi[1])],
        "resamples": resamples,
    }


def objective_info(spec: EnvSpec) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if spec.family == "gmorl":
        return ("delay", "energy"), ("s x 0.01", "J x 50")
    from mec_env.scenario import OBJECTIVES

    names = tuple(spec.scenario.objectives.names)
    return names, tuple(OBJECTIVES[n] for n in names)


def print_table(title: str, rows: dict[str, dict], base: str | None) -> list[str]:
    cols = ["hypervolume", "expected_utility", "sparsity", "cardinality"]
    if any("igd_to_oracle" in r for r in rows.values()):
        cols.append("igd_to_oracle")
    header = "| method | " + " | ".join(cols) + (" | HV / random |" if base else " |")
    lines = [f"### {title}", "", header, "|" + "---|" * (len(cols) + 1 + (1 if base else 0))]
    for name, r in rows.items():
        vals = []
        for c in cols:
            v = r.get(c)
            vals.append("" if v is None else (f"{v:d}" if isinstance(v, int) else f"{v:.4g}"))
        ratio = ""
        if base:
            b = rows[base]["hypervolume"]
            ratio = f" | {r['hypervolume'] / b:.3f}" if b > 0 else " | n/a"
        lines.append(f"| {name} | " + " | ".join(vals) + ratio + " |")
    print("\n".join(lines) + "\n")
    return lines


def compare_lines(rows: dict[str, dict], episodes: int) -> list[str]:
    """One line per method compared by ``--compare-to``: the differences and their intervals."""
    lines = []
    for name, r in rows.items():
        c = r.get("compare_to")
        if c is None:
            continue
        hv, eu = c["hypervolume_diff_ci95"], c["expected_utility_diff_ci95"]
        lines.append(
            f"{name} - {c['method']}: hypervolume {c['hypervolume_diff']:+.4f} "
            f"[{hv[0]:+.4f}, {hv[1]:+.4f}], expected utility {c['expected_utility_diff']:+.4f} "
            f"[{eu[0]:+.4f}, {eu[1]:+.4f}] (95 % paired bootstrap over the {episodes} episodes)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("episodes", "beam_width", "validate_decisions"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.preferences is not None and args.preferences < 2:
        fail(f"--preferences must be >= 2, got {args.preferences}")
    if args.episode_requests is not None and args.episode_requests < 1:
        fail(f"--episode-requests must be >= 1, got {args.episode_requests}")
    runs = [load_run(p) for p in args.runs]
    families = {r.env for r in runs}
    if len(families) > 1:
        fail(f"runs mix environment families {sorted(families)}; evaluate them separately")
    family = args.env or (families.pop() if families else "llm-offload")
    for r in runs:
        if r.env != family:
            fail(f"run {str(r.path)!r} was trained on --env {r.env}, not {family}")

    out = Path(args.out or Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        fail(f"--out {str(out)!r} is not writable ({e.strerror})")

    if args.validate is not None:
        from devices.validate import validate_main

        return validate_main(args, runs, out)

    if family == "llm-offload":
        source = args.scenario or (runs[0].scenario if runs else "default")
        spec = EnvSpec("llm-offload", llm_scenario(source, args.episode_requests, "--scenario"))
        spec.label = f"scenario {spec.scenario.name!r}"
        reference = args.reference_point or "scenario"
        if args.gmorl_edges or args.gmorl_cloud_ghz or args.gmorl_edge_ghz or args.gmorl_ranges:
            fail("--gmorl-* options need --env gmorl")
    else:
        if args.scenario is not None or args.oracle:
            fail("--scenario and --oracle apply to --env llm-offload, not gmorl")
        settings = {
            "num_edges": args.gmorl_edges,
            "cloud_ghz": args.gmorl_cloud_ghz,
            "edge_ghz": args.gmorl_edge_ghz,
            "ranges": args.gmorl_ranges,
        }
        settings = {k: v for k, v in settings.items() if v is not None}
        spec = EnvSpec(
            "gmorl",
            gmorl=settings,
            label="GMORLOffload-v0 "
            + (", ".join(f"{k}={v}" for k, v in settings.items()) or "(training ranges)"),
        )
        reference = args.reference_point or "worst"
        try:
            spec.make(None, 1).close()
        except ValueError as e:
            fail(f"--gmorl-*: {e}")

    from agents.preferences import evaluation_preferences

    names, units = objective_info(spec)
    prefs = evaluation_preferences(len(names), args.preferences)
    probe_env = spec.make("dsac" if family == "gmorl" else None, 1)
    baselines = method_names(args, family, probe_env)
    probe_env.close()
    if not runs and not baselines and not args.per_preference_runs:
        fail("nothing to evaluate: give a RUN or some --baselines")

    variants: list[EnvSpec] = []
    for text in args.eval_scenarios:
        if family == "gmorl":
            settings = parse_gmorl_variant(text)
            v = EnvSpec("gmorl", gmorl=settings, label=f"GMORLOffload-v0 {text}")
            try:
                v.make(None, 1).close()
            except ValueError as e:
                fail(f"--eval-scenarios {text!r}: {e}")
        else:
            sc = llm_scenario(text, args.episode_requests, "--eval-scenarios")
            v = EnvSpec("llm-offload", sc, label=f"scenario {sc.name!r}")
        variants.append(v)
    reference_runs = [load_run(p) for p in args.reference_runs]
    fixed_runs = [load_run(p) for p in args.per_preference_runs]
    for r in fixed_runs:
        if r.options.get("preferences") != "fixed":
            fail(
                f"--per-preference-runs: run {str(r.path)!r} was not trained with one fixed preference"
            )
        if r.env != family:
            fail(
                f"--per-preference-runs: run {str(r.path)!r} was trained on --env {r.env}, not {family}"
            )

    compare_to = None
    if args.compare_to is not None:
        known = {b: b for b in baselines} | {r.label: r.label for r in runs}
        known |= {r.path.name: r.label for r in runs}
        if fixed_runs:
            known[f"per-preference policies ({len(fixed_runs)})"] = (
                f"per-preference policies ({len(fixed_runs)})"
            )
        if args.compare_to not in known:
            fail(
                f"--compare-to: {args.compare_to!r} is not an evaluated method; known: "
                + ", ".join(sorted(known))
            )
        if args.episodes < 2:
            fail(f"--compare-to needs --episodes >= 2 (a paired bootstrap), got {args.episodes}")
        compare_to = known[args.compare_to]

    n_methods = len(runs) + len(baselines) + len(fixed_runs)
    total = args.episodes * n_methods * (1 + len(variants)) + args.episodes * len(reference_runs)
    progress = Progress(total, not args.no_progress)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "command": "python evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "preferences": prefs.tolist(),
        "episodes": args.episodes,
        "seeds": list(range(args.seed, args.seed + args.episodes)),
        "reference": reference,
        "reference_set": args.reference_set,
        "objectives": {"names": list(names), "units": list(units)},
        "scenarios": {},
    }
    md: list[str] = [f"# Evaluation ({len(prefs)} preferences x {args.episodes} episodes)", ""]
    csv_rows: list[dict[str, Any]] = []
    try:
        for k, s in enumerate([spec, *variants]):
            per_episode = evaluate_on(s, runs, baselines, prefs, args, progress, fixed_runs)
            fronts = {name: r.mean(axis=0) for name, r in per_episode.items()}
            oracle_front = None
            if args.oracle and k == 0:
                oracle_front = oracle_points(s, prefs, args)
                fronts = {"oracle (clairvoyant)": oracle_front, **fronts}
            extra = {}
            if k > 0:
                for ref_run in reference_runs:
                    if matches(ref_run, s):
                        label = f"trained on this variant: {ref_run.label}"
                        extra[label] = evaluate_on(s, [ref_run], [], prefs, args, progress)[
                            ref_run.label
                        ].mean(axis=0)
            reference_set = None
            if args.reference_set == "learned-and-random":
                learned = {r.label for r in runs} | {
                    k for k in fronts if k.startswith("per-preference")
                }
                reference_set = learned | {"random"} | set(extra)
            rows, ref_raw, box = metrics_table(
                {**fronts, **extra}, s, reference, oracle_front, reference_set
            )
            if compare_to is not None:
                for name, r in per_episode.items():
                    if name != compare_to:
                        rows[name]["compare_to"] = {
                            "method": compare_to,
                            **paired_bootstrap(r, per_episode[compare_to], box),
                        }
            if extra:  # several runs trained on this variant: the gap is to the best of them
                best = max(extra, key=lambda label: rows[label]["hypervolume"])
                hv_ref = rows[best]["hypervolume"]
                for name in fronts:
                    rows[name]["gap_to_trained_on_variant"] = (
                        float((hv_ref - rows[name]["hypervolume"]) / hv_ref) if hv_ref > 0 else None
                    )
                print(f"gap reference (best run trained on this variant): {best}")
                md.append(f"Gap reference (the best run trained on this variant): {best}")
                md.append("")
            base = "random" if "random" in rows else None
            title = s.label + (" (held out)" if k else "")
            md += print_table(title, rows, base) + [""]
            if compare_to is not None:
                for line in compare_lines(rows, args.episodes):
                    print(line)
                    md.append(f"- {line}")
                print()
                md.append("")
            if any("gap_to_trained_on_variant" in r for r in rows.values()):
                for name, r in rows.items():
                    if r.get("gap_to_trained_on_variant") is not None:
                        line = f"gap to the policy trained on this variant, {name}: {100 * r['gap_to_trained_on_variant']:.2f} %"
                        print(line)
                        md.append(f"- {line}")
                md.append("")
            key = s.label
            results["scenarios"][key] = {
                "held_out": bool(k),
                "reference_point_raw": [float(x) for x in ref_raw],
                "metrics": rows,
                "returns": {n: np.asarray(f).tolist() for n, f in {**fronts, **extra}.items()},
            }
            for name, r in rows.items():
                csv_rows.append(
                    {"scenario": key, "method": name}
                    | {c: r.get(c, "") for c in CSV_COLUMNS[2:]}
                    | {f"mean_return_{n}": v for n, v in zip(names, r["mean_return"], strict=True)}
                )
            if not args.no_plot:
                from mec_env.plots import plot_fronts

                png = out / ("front.png" if k == 0 else f"front-{slug(key)}.png")
                plot_fronts(
                    {**fronts, **extra},
                    names,
                    units,
                    png,
                    title=f"{title}: mean return per preference ({len(prefs)} preferences x {args.episodes} episodes)",
                    reference_point=ref_raw,
                )
    finally:
        progress.close()
    results["wall_s"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text("\n".join(md) + "\n")
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS + [f"mean_return_{n}" for n in names])
        w.writeheader()
        w.writerows(csv_rows)
    print(f"results: {out / 'results.json'}, {out / 'results.csv'}, {out / 'results.md'}")
    if not args.no_plot:
        print(f"plot: {out / 'front.png'}")
    return 0


CSV_COLUMNS = [
    "scenario",
    "method",
    "hypervolume",
    "expected_utility",
    "sparsity",
    "cardinality",
    "igd_to_oracle",
    "gap_to_trained_on_variant",
]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def matches(run: Run, spec: EnvSpec) -> bool:
    """Whether ``run`` was trained on the held-out variant ``spec``."""
    if spec.family == "llm-offload":
        return run.scenario is not None and run.scenario.name == spec.scenario.name
    o = run.options
    trained = {
        "num_edges": o.get("gmorl_edges"),
        "cloud_ghz": o.get("gmorl_cloud_ghz"),
        "edge_ghz": o.get("gmorl_edge_ghz"),
        "ranges": o.get("gmorl_ranges"),
    }
    trained = {k: v for k, v in trained.items() if v is not None and (k, v) != ("ranges", "train")}
    wanted = {k: v for k, v in spec.gmorl.items() if (k, v) != ("ranges", "train")}
    return trained == wanted


def oracle_points(spec: EnvSpec, prefs, args) -> np.ndarray:
    """The clairvoyant oracle's front of mean returns over the same episode seeds (exact
    on tiny instances, beam search otherwise): no policy's mean return over these episodes
    lies beyond it."""
    from mec_env import oracle

    seeds = list(range(args.seed, args.seed + args.episodes))
    try:
        fronts = oracle.oracle_fronts(spec.scenario, seeds, prefs, beam_width=args.beam_width)
    except ValueError as e:
        fail(f"--oracle: {e}")
    modes = sorted({r.mode for r in fronts.results})
    exact = all(r.exact for r in fronts.results)
    print(
        f"oracle: {'/'.join(modes)} search over {len(seeds)} episodes ({'exact' if exact else 'beam: a strong reference, not a bound'})"
    )
    return np.asarray(fronts.mean_front)


if __name__ == "__main__":
    sys.exit(main())
