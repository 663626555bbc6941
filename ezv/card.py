"""A model card (markdown) beside each exported agent file: what it is, how it was trained and scored, how to
run it. The hand-off EZ Remastered and LightZero make through a model hub, without the hub: the `.ezv` file
and its `.md` travel together (the file alone is enough to load and evaluate the agent)."""

from __future__ import annotations

import os
from typing import Any

from ezv import scores


def card_path(agent_path: str) -> str:
    return os.path.splitext(agent_path)[0] + ".md"


def _evaluations(run_dir: str | None, seed: int, progress: int | None) -> list[dict[str, Any]]:
    """The run's logged evaluations of `seed` up to the exported checkpoint (none without a run dir)."""
    from ezv.logger import eval_rows, row_progress

    if not run_dir or not os.path.isfile(os.path.join(run_dir, "metrics.jsonl")):
        return []
    rows = eval_rows(run_dir).get(seed, [])
    return [r for r in rows if progress is None or row_progress(r) <= progress]


def _published(env_id: str) -> str | None:
    game = scores.atari_game(env_id)
    if game is not None:
        row = scores.atari_table()[game]
        named = {"random": "random", "human": "human", "efficientzero_v2": "EfficientZero V2 (paper)",
                 "efficientzero": "EfficientZero (2021)"}
        parts = [f"{label} {row[key]:g}" for key, label in named.items() if row.get(key) is not None]
        return f"Atari 100k {game} (100k agent steps): " + ", ".join(parts) + "."
    task = scores.dmc_task(env_id)
    if task is not None and not scores.is_pixel_id(env_id):
        row = scores.dmc_table()[task]
        if row.get("efficientzero_v2_approx") is None:
            return None
        return f"DMC {task} from state: EfficientZero V2 (paper, approx.) {row['efficientzero_v2_approx']:g}."
    return None


def _highlights(cfg: Any, spec: Any) -> list[tuple[str, str]]:
    net, search, learner = cfg.network, cfg.search, cfg.learner
    actions = f"{spec.action_space.n} discrete" if spec.discrete else f"{spec.action_space.dim}-dim continuous"
    kind = "EfficientZero (2021) pUCT" if search.kind == "puct" else "Gumbel (EZ-V2)"
    num_actions = spec.action_space.n if spec.discrete else None
    rows = [
        ("env", f"`{spec.env_id}` ({spec.backend}; obs {list(spec.obs_shape)} {spec.obs_dtype}, frame stack "
                f"{spec.frame_stack}; {actions} actions; {spec.max_episode_steps}-step episodes)"),
        ("preset", f"`{cfg.preset}`"),
        ("search", f"{kind}, {search.simulations_for(num_actions)} simulations"),
        ("network", f"{net.architecture}" + (f", {net.channels} channels, {net.res_blocks} residual block(s)"
                                             if net.architecture == "conv" else
                                             f", latent {net.latent_dim}, hidden {net.mlp_hidden}")
         + (", value prefix" if net.value_prefix else ", per-step reward")),
        ("learner", f"{learner.optimizer} lr {learner.learning_rate:g}, batch {learner.batch_size}, unroll "
                    f"{learner.unroll_steps}, TD {learner.td_steps}, discount {learner.discount:.4g}, "
                    f"{learner.value_target} value targets, reanalyse {learner.reanalyse_fraction:g}"),
        ("collection", f"{cfg.num_envs} envs, replay ratio {cfg.replay_ratio:g}, replay {cfg.replay.capacity} "
                       f"transitions, learning starts at {cfg.learning_starts}"),
    ]
    if cfg.delay:
        rows.append(("execution delay", f"{'up to ' if cfg.stochastic_delay else ''}{cfg.delay} steps, "
                                        f"{'forward planning' if cfg.forward else 'oblivious'}"))
    return rows


def write_card(agent_path: str, cfg: Any, spec: Any, info: dict[str, Any]) -> str:
    """Write the card of the agent file at `agent_path`; `info` is the file's meta (seed, env_steps,
    train_steps, and run_dir / checkpoint / progress where it came from a run). Returns the card's path."""
    from ezv.files import write_atomic

    name = os.path.basename(agent_path)
    lines = [*_header(name, cfg, spec, info), *_evaluation(name, cfg, spec, info), "## Training setup", "",
             "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in _highlights(cfg, spec)], "",
             "The complete config is inside the file (`ezv.load_agent(path).cfg`).", "", *_usage(name, cfg, spec)]
    path = card_path(agent_path)
    write_atomic(path, "\n".join(lines))
    return path


def _header(name: str, cfg: Any, spec: Any, info: dict[str, Any]) -> list[str]:
    from ezv import __version__

    offline = (f" (of which {cfg.offline_updates} offline, after the last env step)"
               if cfg.offline_updates and info.get("offline_done") else "")
    lines = [f"# {spec.env_id}: an ezv agent (seed {int(info.get('seed', cfg.seed))})", "",
             f"`{name}` holds the networks of an ezv {__version__} agent trained on `{spec.env_id}` for "
             f"{info.get('env_steps', '?')} env steps (agent steps) and {info.get('train_steps', '?')} learner "
             f"updates{offline}" + (", kept as the seed's best evaluation" if info.get("best") else "")
             + ". It is self-contained: the config and env spec needed to rebuild the network and its search are "
             "inside.", ""]
    if info.get("run_dir"):
        lines += [f"From the run `{info['run_dir']}`"
                  + (f", checkpoint {info['checkpoint']}" if "checkpoint" in info else "") + ".", ""]
    return lines


def _evaluation(name: str, cfg: Any, spec: Any, info: dict[str, Any]) -> list[str]:
    lines = ["## Evaluation", ""]
    evals = _evaluations(info.get("run_dir"), int(info.get("seed", cfg.seed)), info.get("progress"))
    protocol = (f"greedy search (no Gumbel or Dirichlet noise; pUCT: the most visited action), "
                f"{cfg.eval_episodes} episodes per evaluation under the env's evaluation protocol"
                + (" (Atari: raw game score, no episodic life, 27k-step cap)" if spec.domain == "atari" else "")
                + (f"; periodic evaluations stop episodes after {cfg.eval_max_episode_steps} steps, the final one "
                   "plays them out" if cfg.eval_max_episode_steps else ""))
    if not evals:
        lines += [f"No evaluation logged with this file. `python -m ezv.evaluate {name}` runs one: {protocol}.", ""]
    else:
        game = scores.atari_game(spec.env_id)
        lines += ["| env steps | updates | return mean ± std | episodes |" + (" human-normalised |" if game else ""),
                  "|---:|---:|---:|---:|" + ("---:|" if game else "")]
        best = max(evals, key=lambda r: r["eval_return_mean"])
        shown = [evals[0], best, evals[-1]] if len(evals) > 3 else evals
        for row in [r for i, r in enumerate(shown) if all(r is not other for other in shown[:i])]:
            cells = (f"| {row['env_steps']}{' (offline)' if row.get('offline') else ''} | {row['updates']} | "
                     f"{row['eval_return_mean']:.2f} ± {row.get('eval_return_std', 0.0):.2f} | "
                     f"{row.get('eval_episodes', '?')} |")
            lines.append(cells + (f" {scores.human_normalized(game, row['eval_return_mean']):.3f} |" if game else ""))
        lines += ["", f"The run's own evaluations (the first, the best and the last up to this agent): {protocol}.",
                  ""]
    published = _published(spec.env_id)
    return lines + ([f"Published reference: {published}", ""] if published else [])


def _usage(name: str, cfg: Any, spec: Any) -> list[str]:
    lines = ["## Use", "", "```bash", f"python -m ezv.evaluate {name} --episodes 32      # mean ± std"
             + (", human-normalised" if scores.atari_game(spec.env_id) else ""),
             f"python -m ezv.evaluate {name} --video episode.mp4   # and a video of one episode", "```", "",
             "```python", "import jax, ezv", "",
             f'agent = ezv.load_agent("{name}")              # network + search, for inference',
             "actions = agent.act(obs, jax.random.PRNGKey(0))  # obs: [N, *agent.obs_shape]"
             + (" (frames stacked on the last axis)" if spec.frame_stack > 1 else ""),
             *(["actions = agent.act(obs, jax.random.PRNGKey(0), pending=due)  # due: the actions that execute "
                "before this decision, next first"] if cfg.delay and cfg.forward else []), "",
             f'result = ezv.Agent.from_file("{name}").evaluate(episodes=32)', "```", ""]
    if spec.backend in ("custom", "gymnasium"):
        lines += [f"`{spec.env_id}` is a user's environment (factory {spec.options.get('factory', '?')}): evaluating "
                  "needs it importable or registered (`ezv.envs.register`) in the evaluating process.", ""]
    return lines
