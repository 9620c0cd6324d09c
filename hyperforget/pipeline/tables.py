"""The comparison (`evaluate.compare`'s result) rendered: fixed-width tables for a terminal, Markdown, the
per-class heatmap and the few headline numbers `dvc metrics show` prints.

Two tables: the output metrics (accuracies, MIA, gaps, time) and the verification (LiRA on D_f, probe and
relearn on the forgotten classes) with every gate's verdict, the failing checks named. Each puts the retrain
reference as a row of mean ± std over its seeds beside the methods; "–" marks what a request kind does not
measure (probe and relearn on random-subset requests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hyperforget.base.io import atomic_path

COLUMNS = [  # (key in a report, header)
    ("forget_acc", "forget acc"), ("retain_acc", "retain acc"), ("test_acc", "test acc"),
    ("test_retained_acc", "test acc retained"), ("test_forgotten_acc", "test acc forgotten"),
    ("worst_retained_acc", "worst retained"), ("mia", "MIA member"), ("mia_attack_acc", "attack acc"),
    ("forgetting_rate", "forgetting rate"),
]
VERIFICATION_HEADERS = {"lira_auc": "LiRA AUC", "lira_tpr_at_1fpr": "TPR@1%FPR", "probe_forget_acc": "probe forget acc",
                        "probe_forget_logit": "probe log-odds",
                        "relearn_steps_m10": "relearn m=10", "relearn_steps_m100": "relearn m=100"}
GATE_NAMES = {"forget_acc": "forget", "retained_test_acc": "retained", "mia": "MIA", "lira_auc": "LiRA",
              "lira_auc_low": "LiRA (low)", "probe_forget_acc": "probe", "probe_forget_logit": "probe log-odds",
              "verification": "unverified"}  # relearn_steps_mM: "relearn mM"
HEADLINE = ("forget_acc", "test_retained_acc", "worst_retained_acc", "mia")


def _num(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _cells(report: dict[str, Any]) -> list[str]:
    cells = [_num(report.get(k)) for k, _ in COLUMNS]
    if report.get("worst_retained_class") is not None:
        cells[[k for k, _ in COLUMNS].index("worst_retained_acc")] += f" (class {report['worst_retained_class']})"
    return cells


def rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per model: original, retrain (mean ± std over seeds), then each method."""
    header = ["method", *(h for _, h in COLUMNS), "avg gap", "time s", "speed-up"]
    summary = result["retrain"]["summary"]
    out = [["original", *_cells(result["original"]), "", "", ""],
           [f"retrain ({result['settings']['retrain_seeds']} seeds)",
            *(f"{_num(summary[k]['mean'])} ± {_num(summary[k]['std'])}" if summary.get(k, {}).get("mean") is not None
              else "–" for k, _ in COLUMNS),
            "0", _num(result["timing"]["t_retrain_s"], 2), "1.0×"]]
    for name, m in result["methods"].items():
        speedup = "–" if m["speedup"] is None else f"{m['speedup']:.1f}×"
        out.append([name, *_cells(m["report"]), _num(m["gaps"].get("avg_gap")), _num(m["wall_time_s"], 2), speedup])
    return header, out


def _vcell(key: str, v: Any, max_steps: int) -> str:
    """One verification value: relearn steps as integers ('>N' = never relearnt within N steps)."""
    if v is None:
        return "–"
    if key.startswith("relearn"):
        return f">{max_steps}" if v > max_steps else f"{v:.0f}"
    return _num(v)


def _spread(key: str, s: dict[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "–"
    digits = 0 if key.startswith("relearn") else 3
    return f"{_num(s['mean'], digits)} ± {_num(s['std'], digits)}"


def _verdict(gates: dict[str, Any] | None) -> str:
    if gates is None:
        return "–"
    failed = [GATE_NAMES.get(k, k.replace("relearn_steps_m", "relearn m").replace("_high", " (high)"))
              for k, c in gates["checks"].items() if not c["passed"]]
    return "pass" if gates["passed"] else "FAIL " + ", ".join(failed)


def verification_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the verification table: θ0, retrain (mean ± std), the held-out retrain seed, then
    each method, with the verdict of every gate (output and verification). Empty for results written before
    verification existed."""
    if "verification" not in result:
        return [], []
    v, ref = result["verification"], result["retrain"]["verification"]
    keys = ["lira_auc", "lira_tpr_at_1fpr", "probe_forget_acc", "probe_forget_logit",
            *(f"relearn_steps_m{m}" for m in v["options"]["relearn_m"])]
    steps = v["options"]["relearn_max_steps"]
    header = ["method", *(VERIFICATION_HEADERS.get(k, k) for k in keys), "gates"]

    def row(name: str, checked: dict[str, Any]) -> list[str]:
        return [name, *(_vcell(k, checked["verification"].get(k), steps) for k in keys), _verdict(checked["gates"])]

    n = result["settings"]["retrain_seeds"]
    body = [row("original", v["original"]), [f"retrain ({n} seeds)", *(_spread(k, ref.get(k)) for k in keys), ""],
            row(f"retrain, held-out seed {v['held_out_seed']}", v["held_out"])]
    body += [row(name, m) for name, m in result["methods"].items() if "verification" in m]
    return header, body


def _fixed_width(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in body)]


def format_table(result: dict[str, Any]) -> str:
    """Fixed-width tables for a terminal: the output metrics, then the verification and gates."""
    title = f"{result['dataset']['name']}: {result['request']['label']}"
    lines = [title, *_fixed_width(*rows(result))]
    header, body = verification_rows(result)
    if header:
        lines += ["", "verification (LiRA on D_f, probe and relearn on the forgotten classes) and gates:",
                  *_fixed_width(header, body)]
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    """comparison.md: the settings, both tables and the per-class test accuracy."""
    header, body = rows(result)
    md = lambda r: "| " + " | ".join(r) + " |"  # noqa: E731
    req, ds, mach, t = result["request"], result["dataset"], result["machine"], result["timing"]
    classes = list(range(ds["num_classes"]))
    per_class = [["retrain (mean)", *(_num(v, 2) for v in result["retrain"]["per_class_test_acc"])]]
    per_class += [[n, *(_num(v, 2) for v in m["report"]["per_class_test_acc"])] for n, m in result["methods"].items()]
    return "\n".join([
        f"# Unlearning comparison: {ds['name']}, {req['label']}",
        "",
        f"- Request: {req['label']} ({req['n_forget']} forget / {req['n_retain']} retain training samples)",
        f"- Data set: {ds['name']} ({ds['train']} train / {ds['val']} val / {ds['test']} test, "
        f"{ds['num_classes']} classes)",
        f"- Model: {result['model']['arch']} width {result['model']['width']} ({result['model']['params']} parameters)",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} with {mach['torch_threads']} "
        f"threads, {mach['platform']}",
        f"- Reference: retrain from scratch, {result['settings']['retrain_seeds']} seeds (one vmapped batch: "
        f"{t['retrain_batch_s']:.2f} s); t_retrain = {t['t_retrain_s']:.2f} s for one seed, plain loop; "
        "speed-up = t_retrain / t_method; times exclude evaluation.",
        "- MIA member: fraction of D_f the loss/entropy attack (fitted per model on D_r vs test) calls member; "
        "attack acc: D_f vs same-class test (0.5 = indistinguishable); forgetting rate: fixed attack fitted on the "
        "original; avg gap: mean |metric − retrain mean|.",
        "",
        md(header), md(["---"] * len(header)), *(md(r) for r in body),
        "",
        *_verification_markdown(result, md),
        "Per-class test accuracy:",
        "",
        md(["method", *map(str, classes)]), md(["---"] * (len(classes) + 1)), *(md(r) for r in per_class),
        "",
    ])


def _verification_markdown(result: dict[str, Any], md: Any) -> list[str]:
    header, body = verification_rows(result)
    if not header:
        return []
    v, g = result["verification"], result["settings"].get("gates", {})
    o = v["options"]
    return [
        "Verification (papers.md §5) and gates:",
        "",
        f"- LiRA AUC: mean over D_f of Φ(z), z the model's logit-scaled confidence against the {v['shadows']} "
        f"shadow retrains (0.5 = like a retrain; gate ≤ 0.5 + {g.get('max_lira_auc_excess')}"
        + (f" and ≥ 0.5 − {g['max_lira_auc_deficit']}" if g.get("max_lira_auc_deficit", 0.5) < 0.5 else "")
        + "); TPR@1%FPR: the "
        f"threshold set on the held-out retrain seed {v['held_out_seed']} (reported, not gated).",
        f"- Probe forget acc: a linear probe on the penultimate features, accuracy on the forgotten classes (gate ≤ "
        f"retrain mean + {g.get('max_probe_excess')}); probe log-odds: probes cross-fitted over validation ∪ test, "
        "the log-odds of their mean true-class probability on the forgotten classes ("
        + (f"gate ≤ retrain mean + {g['max_probe_logit_excess']}" if g.get("max_probe_logit_excess") is not None
           else "reported, not gated: no calibrated limit") + "); relearn m: Adam steps on m forget examples until the "
        f"forgotten classes reach {o['relearn_target']:.0%} test accuracy (>{o['relearn_max_steps']} = never; gate "
        f"≥ retrain mean × {g.get('min_relearn_ratio')} and ≤ max(mean × {g.get('max_relearn_ratio')}, mean + "
        f"{g.get('relearn_band_std')} × std): two-sided). Random-subset requests: –.",
        "- Retrain row: LiRA leave-one-out over the seeds; TPR with one seed held out, the rest shadows (≥ 4 seeds); "
        "probe and relearn over the shadow retrains, the reference the gates use. gates: every output and "
        "verification gate, the failing ones named.",
        "",
        md(header), md(["---"] * len(header)), *(md(r) for r in body),
        "",
    ]


def plot_gaps(result: dict[str, Any], path: str | Path) -> Path:
    """A methods × classes heatmap of per-class test accuracy minus the retrain mean (0 = like a retrain;
    blue below, red above), each cell labelled: readable with any number of methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = np.array([np.nan if v is None else v for v in result["retrain"]["per_class_test_acc"]], dtype=float)
    series = {"original": result["original"]["per_class_test_acc"]}
    series |= {n: m["report"]["per_class_test_acc"] for n, m in result["methods"].items()}
    gap = np.array([[np.nan if v is None else v for v in values] for values in series.values()], dtype=float) - ref
    classes = np.arange(result["dataset"]["num_classes"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1.0 + 0.4 * len(series)))
    limit = max(0.05, float(np.nanmax(np.abs(gap)))) if np.isfinite(gap).any() else 1.0
    im = ax.imshow(gap, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), v in np.ndenumerate(gap):
        ax.text(j, i, "–" if np.isnan(v) else f"{v:+.2f}", ha="center", va="center", fontsize=7)
    ax.set(xticks=classes, yticks=range(len(series)), yticklabels=list(series), xlabel="class",
           title=f"{result['dataset']['name']}, {result['request']['label']}: test acc − retrain mean")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The few numbers worth a terminal: per model, forget / retained / worst-class accuracy, MIA, gap."""
    out = {"retrain": {k: result["retrain"]["summary"][k]["mean"] for k in HEADLINE
                       if k in result["retrain"]["summary"]}}
    if "verification" in result["retrain"]:
        out["retrain"]["lira_auc"] = result["retrain"]["verification"]["lira_auc"]["mean"]
    for name, m in result["methods"].items():
        out[name] = {k: m["report"].get(k) for k in HEADLINE} | {"avg_gap": m["gaps"].get("avg_gap")}
        if "verification" in m:
            out[name] |= {"lira_auc": m["verification"]["lira_auc"], "gates_passed": m["gates"]["passed"]}
    return out
