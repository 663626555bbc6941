"""`python -m ezv.plot RUN_DIR... [--out curves.png] [--table scores.md]`

Evaluation return vs env steps, one panel per env: the mean over every seed of every run given
(runs of one env, one preset and one execution delay setting are pooled; a `--num-seeds` run contributes
each of its seeds) with
a 95% bootstrap confidence band, and the thin per-seed curves. Runs of one env under different
presets (EZ-V2's `classic` beside `ez1_classic` and `muzero_classic`, say) get a curve each, and a row
each in the table, so that the modes compare on one figure. A table of final scores follows: for
Atari, per-game returns and human-normalised scores with the aggregate mean, median and IQM next
to EfficientZero V2's published values; for DMC, returns next to the published EZ-V2 figure. DMC
panels also draw the published seed-mean curves of TD-MPC2, DreamerV3 and SAC (the TD-MPC2 authors'
per-seed results, converted to ezv env steps: one env step is two control steps) up to the first
published point at or past the run's last evaluation.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from ezv import scores
from ezv.logger import eval_rows


def read_run(run_dir: str) -> tuple[str, str, dict[int, list[tuple[int, float]]], dict[int, float]]:
    """(env id, preset, per-seed evaluation curve [(env steps, return)] of the collection phase,
    per-seed final evaluation return, which includes the offline phase when the run had one)."""
    import yaml

    cfg_path, metrics_path = os.path.join(run_dir, "config.yaml"), os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(cfg_path) or not os.path.isfile(metrics_path):
        raise ValueError(f"{run_dir!r} is not an ezv run directory (config.yaml and metrics.jsonl are needed).")
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)["config"]
    by_seed = eval_rows(run_dir, default_seed=cfg["seed"])
    curves = {seed: [(int(r["env_steps"]), float(r["eval_return_mean"])) for r in rows if not r.get("offline")]
              for seed, rows in by_seed.items()}
    final = {seed: float(rows[-1]["eval_return_mean"]) for seed, rows in by_seed.items()}
    curves = {seed: curve for seed, curve in curves.items() if curve}
    return cfg["env_id"], variant_name(cfg), curves, final


def variant_name(cfg: dict[str, Any]) -> str:
    """What a curve of the plot stands for: the run's preset, and its execution delay when it had one (runs
    of one preset under different delays, or forward vs oblivious, are different agents)."""
    name = str(cfg.get("preset", "auto"))
    if cfg.get("delay"):
        delay = f"≤ {cfg['delay']} stochastic" if cfg.get("stochastic_delay") else f"{cfg['delay']}"
        name += f", delay {delay}, {'forward' if cfg.get('forward', True) else 'oblivious'}"
    return name


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, reps: int = 2000) -> tuple[float, float]:
    if len(values) < 2:
        return float(values[0]), float(values[0])
    means = rng.choice(values, size=(reps, len(values)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def collect(run_dirs: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """env id -> preset -> {"curves": [per-seed curves], "final": [per-seed final returns], "runs": [...]}."""
    envs: dict[str, dict[str, dict[str, Any]]] = defaultdict(
        lambda: defaultdict(lambda: {"curves": [], "final": [], "runs": []}))
    for run_dir in run_dirs:
        env_id, preset, curves, final = read_run(run_dir)
        entry = envs[env_id][preset]
        entry["runs"].append(run_dir)
        for seed, curve in curves.items():
            entry["curves"].append(sorted(curve))
        entry["final"].extend(final.values())
    return {env_id: dict(presets) for env_id, presets in envs.items()}


def curve_stats(curves: list[list[tuple[int, float]]], seed: int = 0) -> list[tuple[int, float, float, float, int]]:
    """[(env steps, mean, CI low, CI high, number of curves)] at every evaluation point."""
    rng = np.random.default_rng(seed)
    by_step: dict[int, list[float]] = defaultdict(list)
    for curve in curves:
        for step, value in curve:
            by_step[step].append(value)
    out = []
    for step in sorted(by_step):
        values = np.asarray(by_step[step])
        lo, hi = bootstrap_ci(values, rng)
        out.append((step, float(values.mean()), lo, hi, len(values)))
    return out


# Red, green, purple and orange are the reference line's and the published curves'.
CURVE_COLORS = ("tab:blue", "tab:brown", "tab:cyan", "tab:olive", "tab:pink", "tab:gray")
CURVE_LINESTYLES = ("-", "--", "-.")  # dotted is the published curves'


def curve_style(index: int) -> tuple[str, str]:
    """(colour, line style) of a panel's index-th ezv curve: the colours, then again dashed, then dash-dotted
    (a delay matrix has 8 curves: a plain zip with the colours dropped the 7th and 8th)."""
    colors = len(CURVE_COLORS)
    return CURVE_COLORS[index % colors], CURVE_LINESTYLES[(index // colors) % len(CURVE_LINESTYLES)]


def env_steps_label(steps: float, _position: Any = None) -> str:
    """An axis tick: 500, 4k, 12.5k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(steps) >= scale:
            return f"{steps / scale:.4g}{suffix}"
    return f"{steps:.4g}"


def plot(envs: dict[str, dict[str, dict[str, Any]]], out: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(envs)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (env_id, presets) in zip(axes.flat, sorted(envs.items())):
        last = 0
        for index, (preset, entry) in enumerate(sorted(presets.items())):
            if not entry["curves"]:
                continue
            color, linestyle = curve_style(index)
            for curve in entry["curves"]:
                ax.plot(*zip(*curve), color=color, linestyle=linestyle, alpha=0.25, linewidth=0.8)
            stats = curve_stats(entry["curves"])
            steps = [s[0] for s in stats]
            last = max(last, max(steps))
            name = f"ezv {preset}" if len(presets) > 1 else "ezv"
            ax.plot(steps, [s[1] for s in stats], color=color, linestyle=linestyle, linewidth=2,
                    label=f"{name}, mean of {len(entry['curves'])} seed(s)")
            ax.fill_between(steps, [s[2] for s in stats], [s[3] for s in stats], color=color, alpha=0.2,
                            label="95% bootstrap CI" if len(presets) == 1 else None)
        for (algorithm, curve), color in zip(sorted(published_in_range(env_id, last).items()),
                                             ("tab:green", "tab:purple", "tab:orange")):
            ax.plot([c[0] for c in curve], [c[1] for c in curve], color=color, linestyle=":", marker="o",
                     markersize=3, linewidth=1.2, label=f"{PUBLISHED_NAMES.get(algorithm, algorithm)} (published)")
        reference = reference_score(env_id)
        if reference is not None:
            value, label = reference
            ax.axhline(value, color="tab:red", linestyle="--", linewidth=1, label=label)
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        # 100000 and 110000 side by side run into each other at this width: 100k, 110k.
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(env_steps_label))
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


PUBLISHED_NAMES = {"tdmpc2": "TD-MPC2", "dreamerv3": "DreamerV3", "sac": "SAC"}


def published_in_range(env_id: str, last_step: int) -> dict[str, list[tuple[int, float, int]]]:
    """Published curves for this env up to the first point at or past `last_step` env steps."""
    out = {}
    for algorithm, curve in scores.published_curve(env_id).items():
        beyond = [i for i, point in enumerate(curve) if point[0] >= last_step]
        out[algorithm] = curve[: beyond[0] + 1] if beyond else curve
    return out


def reference_score(env_id: str) -> tuple[float, str] | None:
    game = scores.atari_game(env_id)
    if game is not None:
        return scores.atari_table()[game]["efficientzero_v2"], "EZ-V2 (paper, 100k)"
    task = scores.dmc_task(env_id)
    if task is not None and scores.is_pixel_id(env_id):
        row = scores.dmc_vision_table().get(task, {})
        if row.get("efficientzero_v2_vision_approx") is not None:
            end = int(row["x_end_env_steps"]) // 1000
            return row["efficientzero_v2_vision_approx"], f"EZ-V2 from pixels (figure, approx.; {end}k on its axis)"
        return None
    if task is not None:
        row = scores.dmc_table()[task]
        if row.get("efficientzero_v2_approx") is not None:
            return row["efficientzero_v2_approx"], f"EZ-V2 (paper, {int(row['budget_env_steps']) // 1000}k)"
    return None


def score_table(envs: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One table per preset: a row per env, and the Atari aggregates of that preset over its games."""
    presets = sorted({preset for by_preset in envs.values() for preset in by_preset})
    return "\n".join(
        _preset_table({env_id: by_preset[preset] for env_id, by_preset in envs.items() if preset in by_preset}, preset)
        for preset in presets
    )


def _preset_table(envs: dict[str, dict[str, Any]], preset: str) -> str:
    lines = [f"Preset `{preset}`:", "",
             "| env | seeds | final return (mean ± std) | human-normalised | EZ-V2 (paper) | EZ-V2 human-normalised |",
             "|---|---:|---:|---:|---:|---:|"]
    hns, ref_hns = [], []
    for env_id, entry in sorted(envs.items()):
        final = np.asarray(entry["final"], dtype=float)
        game = scores.atari_game(env_id)
        cells = [env_id, str(len(final)), f"{final.mean():.1f} ± {final.std():.1f}" if final.size else "-"]
        if game is not None and final.size:
            ref = scores.atari_table()[game]["efficientzero_v2"]
            h, rh = scores.human_normalized(game, float(final.mean())), scores.human_normalized(game, ref)
            hns.append(h)
            ref_hns.append(rh)
            cells += [f"{h:.3f}", f"{ref:.1f}", f"{rh:.3f}"]
        else:
            reference = reference_score(env_id)
            cells += ["-", f"{reference[0]:.0f} ({reference[1]})" if reference else "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if hns:
        ours, theirs, all_games = scores.aggregates(hns), scores.aggregates(ref_hns), scores.reference_aggregates()
        lines += ["", f"Human-normalised aggregates over these {len(hns)} Atari game(s):", "",
                  "| | mean | median | IQM |", "|---|---:|---:|---:|",
                  f"| ezv `{preset}` | {ours['mean']:.3f} | {ours['median']:.3f} | {ours['iqm']:.3f} |",
                  f"| EZ-V2 (paper), same games | {theirs['mean']:.3f} | {theirs['median']:.3f} "
                  f"| {theirs['iqm']:.3f} |",
                  f"| EZ-V2 (paper), all 26 games | {all_games['mean']:.3f} | {all_games['median']:.3f} | "
                  f"{all_games['iqm']:.3f} |"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m ezv.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--out", default="curves.png", help="the figure (png, pdf or svg)")
    parser.add_argument("--table", default=None, help="also write the score table (markdown) here")
    args = parser.parse_args(argv)
    try:
        envs = collect(args.run_dirs)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not any(entry["curves"] for presets in envs.values() for entry in presets.values()):
        print("error: none of these runs has an evaluation yet.", file=sys.stderr)
        sys.exit(2)
    plot(envs, args.out)
    table = score_table(envs)
    print(table)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table)
    print(f"figure: {args.out}")
    return table


if __name__ == "__main__":
    main()
