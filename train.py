"""Train a multi-objective agent: one preference-conditioned policy for every trade-off.

    python train.py --scenario default --algo dsac --timesteps 50000 --out runs/dsac
    python train.py --env gmorl --algo dsac --timesteps 200000 --num-envs 64 --preferences gmorl
    python train.py --algo ddpg --scenario tiny --timesteps 20000
    python train.py --resume runs/dsac --timesteps 100000      # continue to 100k steps

Writes into --out: ``config.yaml`` (the resolved options and scenario), ``checkpoint.pt``
(networks, optimisers, entropy coefficient, replay buffer, RNG states, step counter),
``progress.csv`` and TensorBoard events under ``tb/`` (per-objective returns, losses, entropy,
and the hypervolume of a small periodic evaluation). Ctrl-C writes a checkpoint before exiting.
Bad arguments exit with status 2 and one line naming the problem.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ENVS = {
    "llm-offload": ("mec_env/LLMOffload-v0", "mec_env/LLMOffloadContinuous-v0"),
    "gmorl": ("mec_env/GMORLOffload-v0", None),
}
ALGOS = ("dsac", "ddpg")
CHECKPOINT = "checkpoint.pt"


def build_parser():
    from mec_env.cli import OneLineArgumentParser

    ap = OneLineArgumentParser(
        prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--scenario",
        default="default",
        help="scenario preset name or YAML path for --env llm-offload (default: %(default)s)",
    )
    ap.add_argument(
        "--env",
        default="llm-offload",
        choices=sorted(ENVS),
        help="environment family (default: %(default)s)",
    )
    ap.add_argument(
        "--algo",
        default="dsac",
        choices=ALGOS,
        help="dsac: multi-objective Discrete-SAC on the discrete env; ddpg: multi-objective DDPG on the continuous env (default: %(default)s)",
    )
    ap.add_argument(
        "--timesteps",
        type=int,
        default=50_000,
        help="total environment steps, over all parallel envs (default: %(default)s)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the env, the agent and the preferences (default: %(default)s)",
    )
    ap.add_argument(
        "--num-envs",
        type=int,
        default=16,
        help="parallel envs in the batched vector env (default: %(default)s)",
    )
    ap.add_argument(
        "--preferences",
        default="uniform",
        metavar="{uniform,gmorl,W1,W2[,...]}",
        help="uniform: w ~ Dirichlet(1) per episode and env; gmorl: GMORL's evenly spaced set, one per env; comma-separated weights: one fixed preference (a per-preference policy) (default: %(default)s)",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/<algo>-<env or scenario>-s<seed>)",
    )
    ap.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the run in DIR from its checkpoint (its options are kept; --timesteps sets the new total)",
    )
    ap.add_argument(
        "--eval-every",
        type=int,
        default=10_000,
        help="environment steps between evaluations (default: %(default)s)",
    )
    ap.add_argument(
        "--eval-preferences",
        type=int,
        default=11,
        help="preferences in each periodic evaluation (default: %(default)s)",
    )
    ap.add_argument(
        "--checkpoint-every",
        type=int,
        default=25_000,
        help="environment steps between checkpoints (default: %(default)s)",
    )
    ap.add_argument(
        "--gmorl-edges",
        type=int,
        default=None,
        help="--env gmorl: fixed number of edge servers E (default: randomised over the training range 1..8)",
    )
    ap.add_argument(
        "--domain-randomisation",
        type=int,
        default=0,
        metavar="K",
        help="--env llm-offload: train on K randomised variants of the scenario at once (rates scaled by U(1 - spread, 1 + spread); mec_env.randomisation); 0 = off (default: %(default)s)",
    )
    ap.add_argument(
        "--dr-spread",
        type=float,
        default=0.25,
        help="--domain-randomisation: relative spread of each rate (default: %(default)s)",
    )
    ap.add_argument(
        "--gmorl-ranges",
        default="train",
        choices=("train", "test"),
        help="--env gmorl: domain randomisation over the paper's training or testing ranges (default: %(default)s)",
    )
    ap.add_argument(
        "--gmorl-cloud-ghz",
        type=float,
        default=None,
        help="--env gmorl: fixed cloud CPU frequency (default: randomised over the ranges)",
    )
    ap.add_argument(
        "--gmorl-edge-ghz",
        type=float,
        default=None,
        help="--env gmorl: fixed edge CPU frequency (default: randomised over the ranges)",
    )
    ap.add_argument(
        "--gmorl-cost-features",
        action="store_true",
        help="--env gmorl: add two observation rows, the delay and energy each server would be charged for the current task now (-reward of that action; not in the paper)",
    )
    ap.add_argument(
        "--gmorl-relative-costs",
        action="store_true",
        help="--algo dsac with --gmorl-cost-features: also give each server the preference-scalarised cost relative to the cheapest server's, inputs that stay in [0, 1] at CPU frequencies outside the training ranges (not in the paper)",
    )
    ap.add_argument(
        "--cost-features",
        action="store_true",
        help="--env llm-offload: append to the observation, for the local target and each server, what the cost model predicts the current request would cost there now (the knowledge greedy myopic acts on; LLMOffloadEnv's cost_features; not the default)",
    )
    ap.add_argument(
        "--plan-head",
        default="auto",
        choices=("auto", "factorised", "conditional"),
        help="--algo dsac: factorised (one independent head per plan part, the factorised action_mask) or conditional (--env llm-offload: split, KV tier and expert policy chosen given the target, masked by info['plan_mask'], so no plan falls back); auto: conditional on llm-offload, factorised on gmorl (default: %(default)s)",
    )
    ap.add_argument(
        "--critic-split",
        default="auto",
        choices=("auto", "none", "plan", "target", "observed"),
        help="--algo dsac: none (one Q per objective), plan (each critic predicts the immediate reward and the continuation of the whole plan, Q = R + C, R regressed on the reward itself), target (the same with the continuation depending on the target only) or observed (--env gmorl with --gmorl-cost-features: R read exactly from the cost rows, only C learnt; not in the paper); auto: target on llm-offload, none on gmorl (default: %(default)s)",
    )
    ap.add_argument(
        "--device", default="cpu", help="torch device for the networks (default: %(default)s)"
    )
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="CPU threads for torch; 1 is robust when the env or other work shares the cores (default: %(default)s)",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def fail(msg: str):
    from mec_env.cli import fail as _fail

    _fail(msg)


def resolve_options(args) -> dict[str, Any]:
    """The run's options: from the command line, or from the checkpointed run on --resume."""
    if args.timesteps < 1:
        fail(f"--timesteps must be >= 1, got {args.timesteps}")
    if args.resume is not None:
        run = Path(args.resume)
        if not (run / CHECKPOINT).is_file() or not (run / "config.yaml").is_file():
            fail(f"--resume: {str(run)!r} has no {CHECKPOINT} and config.yaml to continue from")
        opts = yaml.safe_load((run / "config.yaml").read_text())["options"]
        opts.update(timesteps=args.timesteps, out=str(run), no_progress=args.no_progress)
        return opts
    for name in ("num_envs", "eval_every", "eval_preferences", "checkpoint_every", "torch_threads"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.algo == "ddpg" and ENVS[args.env][1] is None:
        fail(
            f"--algo ddpg needs a continuous env; --env {args.env} has none (use --env llm-offload)"
        )
    if args.gmorl_edges is not None and not 1 <= args.gmorl_edges <= 10:
        fail(f"--gmorl-edges must be in 1..10, got {args.gmorl_edges}")
    if args.gmorl_cost_features and args.env != "gmorl":
        fail("--gmorl-cost-features needs --env gmorl")
    if args.gmorl_relative_costs and not (args.gmorl_cost_features and args.algo == "dsac"):
        fail("--gmorl-relative-costs needs --algo dsac and --gmorl-cost-features")
    if args.cost_features and args.env != "llm-offload":
        fail("--cost-features needs --env llm-offload (GMORL's are --gmorl-cost-features)")
    if args.plan_head != "auto" and args.algo != "dsac":
        fail(f"--plan-head {args.plan_head} needs --algo dsac")
    if args.plan_head == "conditional" and args.env != "llm-offload":
        fail("--plan-head conditional needs --env llm-offload (GMORL's action is the server only)")
    if args.critic_split != "auto" and args.algo != "dsac":
        fail(f"--critic-split {args.critic_split} needs --algo dsac")
    if args.critic_split == "observed" and not args.gmorl_cost_features:
        fail("--critic-split observed needs --env gmorl and --gmorl-cost-features")
    if args.domain_randomisation:
        if args.env != "llm-offload":
            fail(
                "--domain-randomisation applies to --env llm-offload (GMORL randomises its own ranges)"
            )
        if not 1 <= args.domain_randomisation <= args.num_envs:
            fail(
                f"--domain-randomisation must be in 1..--num-envs ({args.num_envs}), got {args.domain_randomisation}"
            )
        if not 0 <= args.dr_spread < 1:
            fail(f"--dr-spread must be in [0, 1), got {args.dr_spread}")
    for name in ("gmorl_cloud_ghz", "gmorl_edge_ghz"):
        value = getattr(args, name)
        if value is not None and not 0 < value <= 10:
            fail(f"--{name.replace('_', '-')} must be in (0, 10] GHz, got {value}")
    opts = {k: v for k, v in vars(args).items() if k != "resume"}
    llm = args.env == "llm-offload"  # resolve "auto": the measured defaults (README)
    if args.plan_head == "auto":
        opts["plan_head"] = "conditional" if llm and args.algo == "dsac" else "factorised"
    if args.critic_split == "auto":
        opts["critic_split"] = "target" if llm and args.algo == "dsac" else "none"
    if args.preferences not in ("uniform", "gmorl"):
        try:
            weights = [float(x) for x in args.preferences.split(",")]
        except ValueError:
            weights = []
        if len(weights) < 2 or min(weights) < 0 or not sum(weights) > 0:
            fail(
                f"--preferences must be uniform, gmorl or non-negative comma-separated weights, got {args.preferences!r}"
            )
        opts["preferences"] = "fixed"
        opts["fixed_preference"] = [w / sum(weights) for w in weights]
    if opts["out"] is None:
        what = "gmorl" if args.env == "gmorl" else Path(str(args.scenario)).stem
        opts["out"] = str(Path("runs") / f"{args.algo}-{what}-s{args.seed}")
    out = Path(opts["out"])
    if (out / CHECKPOINT).exists():
        fail(
            f"--out {str(out)!r} already holds a run; continue it with --resume {out} or choose another --out"
        )
    return opts


def make_vec_env(opts: dict[str, Any], num_envs: int, for_eval: bool = False):
    import gymnasium as gym

    import mec_env  # noqa: F401  (registers the environments)

    env_id = ENVS[opts["env"]][1 if opts["algo"] == "ddpg" else 0]
    kwargs: dict[str, Any] = {}
    if opts["env"] == "llm-offload" and opts.get("cost_features"):
        kwargs["cost_features"] = True
    if opts["env"] == "llm-offload" and opts.get("domain_randomisation") and not for_eval:
        from mec_env.randomisation import MixedScenarioVectorEnv, randomised_scenarios

        variants = randomised_scenarios(
            opts["scenario_obj"], opts["domain_randomisation"], opts["seed"], opts["dr_spread"]
        )
        return MixedScenarioVectorEnv(
            variants, num_envs, continuous=opts["algo"] == "ddpg", **kwargs
        )
    if opts["env"] == "llm-offload":
        kwargs["scenario"] = opts["scenario_obj"]
    else:
        if opts.get("gmorl_edges") is not None:
            kwargs["num_edges"] = opts["gmorl_edges"]
        for key in ("cloud_ghz", "edge_ghz"):
            if opts.get(f"gmorl_{key}") is not None:
                kwargs[key] = opts[f"gmorl_{key}"]
        kwargs["ranges"] = opts.get("gmorl_ranges", "train")
        if opts.get("gmorl_cost_features"):
            kwargs["cost_features"] = True
    return gym.make_vec(env_id, num_envs=num_envs, **kwargs)


def make_agent(opts: dict[str, Any], env):
    if opts["algo"] == "dsac":
        from agents.dsac import DiscreteSAC, DSACConfig

        config = DSACConfig(
            device=opts["device"],
            # runs from before these options: factorised, one Q per objective
            plan_head=opts.get("plan_head", "factorised"),
            split_reward=opts.get("critic_split", "none") != "none",
            continuation="target" if opts.get("critic_split") == "target" else "plan",
            immediate="observed" if opts.get("critic_split") == "observed" else "learned",
            relative_costs=bool(opts.get("gmorl_relative_costs", False)),
        )
        return DiscreteSAC(env, config, seed=opts["seed"]), config
    from agents.ddpg import MODDPG, DDPGConfig

    config = DDPGConfig(device=opts["device"])
    return MODDPG(env, config, seed=opts["seed"]), config


class Logger:
    """progress.csv and TensorBoard, appended to on resume."""

    def __init__(self, out: Path, reward_names: tuple[str, ...]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.names = reward_names
        self.columns = [
            "step",
            "wall_s",
            *[f"return_{n}" for n in reward_names],
            "episodes",
            "critic_loss",
            "policy_loss",
            "alpha",
            "entropy",
            "eval_hypervolume",
            "eval_expected_utility",
        ]
        path = out / "progress.csv"
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.csv = csv.DictWriter(self.file, fieldnames=self.columns, extrasaction="ignore")
        if new:
            self.csv.writeheader()
        self.tb = SummaryWriter(str(out / "tb"))

    def log(self, row: dict[str, Any]) -> None:
        self.csv.writerow({k: row.get(k, "") for k in self.columns})
        self.file.flush()
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and np.isfinite(v):
                self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def save_checkpoint(out: Path, agent, state: dict[str, Any]) -> None:
    """Atomic: write to a temporary file, then rename over the old checkpoint."""
    import torch

    tmp = out / (CHECKPOINT + ".tmp")
    torch.save({"agent": agent.state_dict(), **state}, tmp)
    os.replace(tmp, out / CHECKPOINT)


def evaluate(opts, agent, reward_dim: int, num_prefs: int, seed: int) -> dict[str, float]:
    from agents.evaluation import episode_returns, front_metrics, return_bounds
    from agents.preferences import evaluation_preferences

    prefs = evaluation_preferences(reward_dim, num_prefs)
    env = make_vec_env(opts, len(prefs), for_eval=True)
    low, high, ref = return_bounds(env)

    def policy(obs, info, weights):
        return agent.act(obs, info.get(agent.mask_key), weights, deterministic=True)

    try:
        returns = episode_returns(env, policy, prefs, episodes=1, seed=seed)
    finally:
        env.close()
    return front_metrics(returns, low, high, ref)


def train(opts: dict[str, Any]) -> Path:
    import torch
    from tqdm import tqdm

    from agents.preferences import PreferenceSampler
    from mec_env import load_scenario

    torch.set_num_threads(int(opts.get("torch_threads", 1)))
    out = Path(opts["out"])
    resuming = (out / CHECKPOINT).exists()
    if opts["env"] == "llm-offload":
        try:
            opts["scenario_obj"] = (
                load_scenario(opts["scenario"])
                if not resuming
                else load_scenario(out / "scenario.yaml")
            )
        except ValueError as err:
            fail(f"--scenario: {err}")
    out.mkdir(parents=True, exist_ok=True)
    env = make_vec_env(opts, opts["num_envs"])
    agent, config = make_agent(opts, env)
    rng = np.random.default_rng(opts["seed"])
    reward_dim = int(env.reward_dim)
    try:
        prefs = PreferenceSampler(
            opts["preferences"], reward_dim, opts["num_envs"], rng, opts.get("fixed_preference")
        )
    except ValueError as err:
        fail(f"--preferences: {err}")
    step, episodes, start_wall = 0, 0, 0.0
    if resuming:
        ckpt = torch.load(out / CHECKPOINT, weights_only=False)
        try:
            agent.load_state_dict(ckpt["agent"])
        except (RuntimeError, KeyError, ValueError) as err:
            from agents.common import first_line

            fail(
                f"--resume: the checkpoint in {str(out)!r} does not fit its config.yaml ({first_line(err)})"
            )
        step, episodes, start_wall = ckpt["step"], ckpt["episodes"], ckpt["wall_s"]
        rng.bit_generator.state = ckpt["rng"]
        prefs.weights = ckpt["preferences"]
    else:
        saved = {k: v for k, v in opts.items() if k != "scenario_obj"}
        config_doc = {
            "options": saved,
            "agent": {f.name: getattr(config, f.name) for f in fields(config)},
        }
        (out / "config.yaml").write_text(yaml.safe_dump(config_doc, sort_keys=False))
        if "scenario_obj" in opts:
            opts["scenario_obj"].to_yaml(out / "scenario.yaml")
    names = (
        tuple(getattr(getattr(env, "scenario", None), "objectives", None).names)
        if opts["env"] == "llm-offload"
        else ("delay", "energy")
    )
    logger = Logger(out, names)
    # episodes in flight are not checkpointed: a resumed run starts fresh episodes, seeded by the step
    obs, info = env.reset(seed=opts["seed"] + step)
    autoreset = np.zeros(opts["num_envs"], bool)
    ep_return = np.zeros((opts["num_envs"], reward_dim))
    finished: list[np.ndarray] = []
    last_losses: dict[str, float] = {}
    next_eval = (step // opts["eval_every"] + 1) * opts["eval_every"]
    next_ckpt = (step // opts["checkpoint_every"] + 1) * opts["checkpoint_every"]
    t0 = time.perf_counter() - start_wall

    def checkpoint() -> None:
        save_checkpoint(
            out,
            agent,
            {
                "step": step,
                "episodes": episodes,
                "wall_s": time.perf_counter() - t0,
                "rng": rng.bit_generator.state,
                "preferences": prefs.weights.copy(),
                "options": {k: v for k, v in opts.items() if k != "scenario_obj"},
            },
        )

    bar = tqdm(
        total=opts["timesteps"],
        initial=min(step, opts["timesteps"]),
        unit="step",
        disable=opts.get("no_progress", False),
        dynamic_ncols=True,
    )
    interrupted = False
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while step < opts["timesteps"]:
            masks = info.get(agent.mask_key)
            weights = prefs.weights
            actions = agent.act(obs, masks, weights, deterministic=False)
            next_obs, reward, terminated, truncated, next_info = env.step(actions)
            keep = ~autoreset  # NEXT_STEP autoreset: a reset step carries no transition
            if keep.any():
                agent.store(
                    obs[keep], actions[keep], reward[keep], next_obs[keep], terminated[keep], weights[keep],
                    None if masks is None else masks[keep],
                    None if masks is None else next_info[agent.mask_key][keep],
                )  # fmt: skip
            ep_return[keep] += reward[keep]
            done = terminated | truncated
            if done.any():
                finished.extend(ep_return[done])
                episodes += int(done.sum())
                ep_return[done] = 0.0
                prefs.resample(done)
            autoreset = done
            obs, info = next_obs, next_info
            step += opts["num_envs"]
            for _ in range(getattr(config, "updates_per_step", 1)):
                losses = agent.update()
                if losses:
                    last_losses = losses
            bar.update(opts["num_envs"])
            if step >= next_eval or step >= opts["timesteps"]:
                row: dict[str, Any] = {
                    "step": step,
                    "wall_s": round(time.perf_counter() - t0, 2),
                    "episodes": episodes,
                    **last_losses,
                }
                if finished:
                    mean = np.mean(finished, axis=0)
                    row.update({f"return_{n}": float(v) for n, v in zip(names, mean, strict=True)})
                    finished = []
                metrics = evaluate(
                    opts, agent, reward_dim, opts["eval_preferences"], seed=10_000 + opts["seed"]
                )
                row.update(
                    eval_hypervolume=metrics["hypervolume"],
                    eval_expected_utility=metrics["expected_utility"],
                )
                logger.log(row)
                bar.set_postfix(hv=f"{metrics['hypervolume']:.3f}")
                next_eval += opts["eval_every"]
            if step >= next_ckpt:
                checkpoint()
                next_ckpt += opts["checkpoint_every"]
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
        checkpoint()
        logger.close()
        env.close()
    verb = "interrupted at" if interrupted else "finished at"
    print(f"{verb} {step} steps ({episodes} episodes, {time.perf_counter() - t0:.0f} s)")
    print(f"checkpoint: {out / CHECKPOINT}")
    print(f"logs: {out / 'progress.csv'} and TensorBoard: tensorboard --logdir {out / 'tb'}")
    print(f"config: {out / 'config.yaml'}")
    if interrupted:
        sys.exit(130)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = resolve_options(args)
    train(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
