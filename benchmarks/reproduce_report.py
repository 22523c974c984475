"""The Markdown report of benchmarks/reproduce.py (docs/REPRODUCTION.md), rendered from its state.

Pure: state dict in, Markdown out; `python benchmarks/reproduce.py --report-only` re-renders it.
"""

from __future__ import annotations

from pathlib import Path

import _common as C

from prefsift.storage.chance import wilson

CONDITIONS = ("full", "ldirm", "random", "tif")  # downstream training sets
DATASETS = {  # --data -> the shared file, the report it writes, its wording
    "hh": dict(
        file=C.HH_FILE,
        report="docs/REPRODUCTION.md",
        title="HH-RLHF harmless",
        short="HH",
        fit_bias="short dialogues",
    ),
    "alpaca": dict(
        file=C.ALPACA_FILE,
        report="docs/REPRODUCTION_ALPACA.md",
        not_a_pair=" (ties)",
        title="AlpacaEval (alpaca-7b vs text-davinci-003, judged by GPT-4)",
        short="the GPT-4 judge",
        fit_bias="short instructions and short outputs",
    ),
}


PAPER = {
    "pearson_lossdiff": "0.77",
    "pearson_irm": "0.67",
    "overlap_lossdiff": "0.66–0.70",
    "overlap_irm": "0.60–0.70",
    "overlap_lossdiff_irm": "0.73–0.78",
}
LABELS = {
    "ld": "LossDiff 10–90",
    "irm": "IRM 10–90",
    "ldirm": "LossDiff-IRM (both 10–90)",
    "tif": "TIF (IF 10–90)",
    "full": "full data",
    "random": "random, same size as LossDiff-IRM",
}


def diagnostics_findings(dg: dict, chk: dict | None, fit_val: dict | None) -> list[str]:
    """Plain statements of where each measured number lies relative to the paper's and to chance."""
    out = []
    for k, paper in PAPER.items():
        lo, hi = (float(x) for x in (paper.split("–") * 2)[:2])
        v = dg.get(k)
        if v is None:
            continue
        where = "above" if v > hi else "below" if v < lo else "within"
        out.append(f"- {k.replace('_', ' ')} = {v:.3f}: {where} the paper's {paper}.")
    if chk:
        for k in ("overlap_lossdiff", "overlap_irm", "overlap_lossdiff_irm"):
            if dg.get(k) is not None:
                out.append(
                    f"- {k.replace('_', ' ')} minus the chance level {chk['tif_share']:.3f}: "
                    f"{dg[k] - chk['tif_share']:+.3f}."
                )
    if fit_val and fit_val.get("steps") is not None:
        out.append(
            f"- θ_val is {fit_val['steps']} optimizer step(s) from θ, so LossDiff is close to its first-order "
            "form η·IF (docs/METHOD.md): a LossDiff–IF correlation higher than the paper's is expected in this "
            "regime, and says little about LossDiff far from it."
        )
    return out


def criteria_rows(ev: dict) -> list[tuple[str, str, str]]:
    """(criterion, what was measured, verdict) for docs/REPRODUCTION_CRITERIA.md's C1-C5, from
    `prefsift diagnose --json`'s evidence."""
    rows = []
    pe = ev.get("policy_eval")
    if pe:
        lo, hi = wilson(pe["reward_accuracy"] * pe["n_pairs"], pe["n_pairs"])
        ok = pe["mean_margin"] >= 0.2 and lo > 0.5
        rows.append(
            (
                "C1 θ moved",
                f"eval margin {pe['mean_margin']:.3f}; reward accuracy {pe['reward_accuracy']:.3f} "
                f"[{lo:.3f}, {hi:.3f}] on {pe['n_pairs']} pairs",
                "holds" if ok else "fails",
            )
        )
    else:
        rows.append(("C1 θ moved", "θ has no evaluation", "not measured"))
    corr = {r["score"]: r for r in ev.get("correlations", []) if r.get("subset") == "all" and "pearson" in r}
    for cid, score in (("C2 LossDiff tracks IF", "lossdiff"), ("C3 IRM tracks IF", "irm")):
        r = corr.get(score)
        if not r:
            rows.append((cid, "no correlation measured", "not measured"))
            continue
        ok = r["pearson_lo"] > 0 and (score != "irm" or (r.get("partial_pearson_lo") or 0) > 0)
        rows.append(
            (
                cid,
                f"Pearson {r['pearson']:.3f} [{r['pearson_lo']:.3f}, {r['pearson_hi']:.3f}], partial "
                f"{r['partial_pearson']:.3f} [{r['partial_pearson_lo']:.3f}, {r['partial_pearson_hi']:.3f}], "
                f"n {r['n']}",
                "holds" if ok else "fails",
            )
        )
    bands = {r["rule"]: r for r in ev.get("bands", []) if r.get("band") == "10-90"}
    for rule in ("lossdiff-irm", "lossdiff", "irm"):
        r = bands.get(rule)
        if r:
            ok = r["lift"] > 1 and r["p_value"] < 0.05
            rows.append(
                (
                    f"C4 {rule} 10–90 finds TIF",
                    f"overlap {r['overlap']:.3f} vs chance {r['chance']:.3f} (null 95% {r['null_lo']:.3f}–"
                    f"{r['null_hi']:.3f}), lift {r['lift']:.3f}, p {r['p_value']:.3g}",
                    "holds" if ok else "fails",
                )
            )
    auc = {r["score"]: r for r in ev.get("noise_auroc", []) if r.get("auroc") is not None}
    for score in ("irm", "if"):
        r = auc.get(score)
        if not r:
            rows.append((f"C5 {score} sees swapped pairs", "no AUROC (no flagged pairs?)", "not measured"))
            continue
        rows.append(
            (
                f"C5 {score} sees swapped pairs",
                f"AUROC {r['auroc']:.3f} [{r['auroc_lo']:.3f}, {r['auroc_hi']:.3f}] "
                f"({r['n_positive']} swapped, {r['n_negative']} clean)",
                "holds" if r["auroc_lo"] > 0.5 else "fails",
            )
        )
    return rows


def evidence_section(ev: dict) -> list[str]:
    """The criteria verdicts and `prefsift diagnose`'s evidence, as the command prints it."""
    from prefsift.evidence import format_evidence

    L = [
        "## The criteria (docs/REPRODUCTION_CRITERIA.md, written before the run) and the evidence",
        "",
        "Verdicts computed from `prefsift diagnose --selection ldirm --json` by the rules written down before "
        "the run: an interval that includes the null value is a fail, whatever its point estimate.",
        "",
        "| criterion | measured (95% intervals) | verdict |",
        "| --- | --- | --- |",
    ]
    L += [f"| {a} | {b} | **{c}** |" for a, b, c in criteria_rows(ev)]
    L += [
        "",
        "`prefsift diagnose --selection ldirm`, its evidence part:",
        "",
        "```",
        format_evidence(ev),
        "```",
        "",
    ]
    return L


def canonical_command(c: dict) -> str:
    """The command that regenerates a run with this config from scratch."""
    parts = ["python benchmarks/reproduce.py"]
    if c.get("data", "hh") != "hh":
        parts.append(f"--data {c['data']}")
    for key in (
        "train",
        "val",
        "eval",
        "max_length",
        "fit_length",
        "batch_size",
        "lr",
        "beta",
        "epochs",
        "noise",
        "seed",
        "data_seed",
        "threads",
        "model",
    ):
        if (
            c.get(key) is not None
            and (key != "fit_length" or c[key] != c["max_length"])
            and (key not in ("threads", "model") or c[key])
        ):
            parts.append(
                f"--{key.replace('_', '-')} {c[key]:g}"
                if isinstance(c[key], float)
                else f"--{key.replace('_', '-')} {c[key]}"
            )
    parts.append("--seeds " + " ".join(map(str, c["seeds"])))
    if c.get("bf16"):
        parts.append("--bf16")
    if c.get("work") and not c["work"].startswith("/tmp/repro/"):
        parts.append(f"--work {c['work']}")
    return " ".join(parts)


def planned_stages(c: dict) -> list[str]:
    fixed = [
        "data",
        "warmup",
        "fit_val",
        "score",
        "influence",
        "truncation",
        "selections",
        "check",
        "eval_theta",
    ]
    return fixed + [f"dpo:{cond}:{seed}" for seed in c["seeds"] for cond in c["conditions"]]


def fmt(x, nd: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and x != x) else f"{x:.{nd}f}"


def mean_std(xs: list[float]) -> str:
    import numpy as np

    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.3f} (1 seed)"
    return f"{np.mean(xs):.3f} ± {np.std(xs, ddof=1):.3f}"


def write_report(state: dict, out: Path) -> None:
    """Render the whole report from the state (partial runs render what they have)."""
    c, m, st = state["config"], state["machine"], state["stages"]
    data = c.get("data", "hh")  # runs from before --data existed are HH runs
    ds = DATASETS[data]
    res = {k: v.get("result") for k, v in st.items() if v.get("status") == "done"}
    # the other data set's report of the same size: REPRODUCTION_384.md <-> REPRODUCTION_ALPACA_384.md
    stem = Path(ds["report"]).stem
    suffix = out.stem[len(stem) :] if out.stem.startswith(stem) else ""
    others = [
        f"[{o['title']}]({Path(o['report']).stem}{suffix}.md)" for k, o in DATASETS.items() if k != data
    ]
    L = [
        f"# Reproduction on real data: {ds['title']} with SmolLM2-135M-Instruct",
        "",
        f"The same pipeline on the other shared data set: {', '.join(others)}.",
        "",
        "Generated by `benchmarks/reproduce.py` (do not edit by hand). Regenerate with:",
        "",
        f"    {canonical_command(c)}",
        "",
        "(the run writes its state to WORK/state.json after every stage; `--resume` continues a killed run, "
        "`--report-only` re-renders this file from the state)",
        "",
        f"Started {state['started']}, last update {state['updated']}; "
        + (
            f"**finished {state['finished']}**."
            if state.get("finished")
            else "**partial: the run did not finish** (stages missing below were not measured)."
        ),
        "",
    ]
    missing = [k for k in planned_stages(c) if st.get(k, {}).get("status") != "done"]
    if missing:
        L += [
            f"Not measured ({len(missing)} of {len(planned_stages(c))} planned stages): "
            + ", ".join(f"`{k}`" for k in missing)
            + ".",
            "",
        ]
    if state.get("stopped"):
        L += ["Stopped on an error:", "", "```", state["stopped"][-1500:], "```", ""]
    L += [
        "## Setup",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores (other jobs shared it at times: see the load average "
        "per stage below), "
        f"torch {m['torch']} (threads per prefsift process: see the command list), Python {m['python']}, "
        "no GPU.",
        f"- Model: {c.get('model') or 'SmolLM2-135M-Instruct (`prefsift.embedded.smollm2_path()`)'} as π_ref, float32; "
        f"LoRA (r 16, all linear layers), β = {c['beta']}, lr {c['lr']}, batch size {c['batch_size']}, "
        f"max_length {c['max_length']}{', bf16 autocast' if c.get('bf16') else ''}.",
        f"- Pipeline (docs/METHOD.md): θ = 1-epoch DPO warm-up from π_ref on the (noisy) train pairs; θ_val = 1 epoch "
        f"from θ on the val pairs; IRM, LossDiff (`prefsift score`), exact IF by JVP and TIF "
        f"(`prefsift influence`); downstream = DPO from θ for {c['epochs']:g} epoch(s) per seed, seeds {c['seeds']}.",
    ]
    d = res.get("data")
    if d:
        L += [
            f"- Data: `{ds['file']}` ({d.get('rows', d.get('hh_rows')):,} rows, "
            f"{d.get('bad', d.get('hh_bad'))} not a pair{ds.get('not_a_pair', '')}); "
            "the pairs whose prompt + longer "
            f"response (+ EOS) fit in {d['fit_length']} tokens: {d['fit']:,} "
            f"(token-length percentiles of all pairs 50/75/90: "
            f"{', '.join(f'{v:.0f}' for v in d['length_pcts'].values())}). A seeded sample (data seed "
            f"{c['data_seed']}) of them: train {d['ingested']['train']}, val {d['ingested']['val']}, held-out eval "
            f"{d['ingested']['eval']} (disjoint); mean tokens per pair (longer side) "
            + ", ".join(f"{k} {v:.0f}" for k, v in d["mean_tokens"].items())
            + ".",
            f"- Label noise: chosen/rejected swapped in {d['n_swapped']} of {d['ingested']['train']} train pairs "
            f"({c['noise']:.0%}, seeded), ingested with `noise: true` (pairs.noise); val and eval pairs are clean.",
        ]
    tr = res.get("truncation")
    if tr:
        n_tr = sum(v["truncated"] for v in tr.values())
        L.append(
            f"- Truncation (TRL keep_start at max_length {c['max_length']}): {n_tr} truncated pairs in "
            f"{len(tr)} cached log-prob runs ("
            + "; ".join(f"{k}: {v['truncated']}/{v['n']}" for k, v in tr.items())
            + ")."
        )
    L.append("")

    inf, chk = res.get("influence"), res.get("check")
    if inf:
        dg = inf["diagnostics"]
        L += [
            "## Diagnostics next to the paper's",
            "",
            f"IF for {inf['n_pairs']} train pairs over {inf['n_params']:,} LoRA parameters ({inf['method']}); "
            f"TIF keeps {inf['n_tif']} ({inf['n_tif'] / inf['n_pairs']:.0%}). Overlap coefficient "
            "|A∩B| / min(|A|,|B|); note that a random subset has an expected overlap with TIF equal to TIF's "
            "kept share, shown in the last row as the chance level.",
            "",
            "| quantity | prefsift | recomputed here (numpy, from the stored scores) | paper |",
            "| --- | --- | --- | --- |",
        ]
        for k in (
            "pearson_lossdiff",
            "pearson_irm",
            "overlap_lossdiff",
            "overlap_irm",
            "overlap_lossdiff_irm",
        ):
            L.append(f"| {k.replace('_', ' ')} | {fmt(dg.get(k))} | {fmt((chk or {}).get(k))} | {PAPER[k]} |")
        for k in ("spearman_lossdiff", "spearman_irm"):
            L.append(f"| {k.replace('_', ' ')} | {fmt(dg.get(k))} | | – |")
        if chk:
            L.append(f"| chance overlap (TIF share) | | {fmt(chk['tif_share'])} | – |")
        L += ["", f"Validation DPO loss at θ: {fmt(inf.get('val_loss'), 4)}.", ""]
        L += diagnostics_findings(dg, chk, res.get("fit_val")) + [""]

    sels = res.get("selections")
    ev = ((sels or {}).get("ldirm") or {}).get("evidence")
    if ev:
        L += evidence_section(ev)
    if sels:
        L += [
            "## Label noise: which pairs each rule drops",
            "",
            "| rule | kept | overlap with TIF | swapped pairs dropped | clean pairs dropped |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name in ["ld", "irm", "ldirm", "tif", "full"] + [k for k in sels if k.startswith("random-")]:
            s = sels.get(name)
            if not s:
                continue
            nz, tf = s.get("noise") or {}, s.get("tif") or {}
            label = LABELS.get(name.split("-s")[0] if name.startswith("random") else name, name)
            if name.startswith("random"):
                label += f" (seed {name.split('-s')[1]})"
            L.append(
                f"| {label} `{s['rule']}` | {s['n_kept']}/{s['n_total']} ({s['fraction']:.0%}) | "
                f"{fmt(tf.get('overlap'))} | {nz.get('noisy_dropped', '–')}/{nz.get('n_noisy', '–')} = "
                f"{fmt(nz.get('noisy_dropped_share'))} | {nz.get('clean_dropped', '–')}/{nz.get('n_clean', '–')}"
                f" = {fmt(nz.get('clean_dropped_share'))} |"
            )
        L.append("")
        for name in ("ld", "irm", "ldirm", "tif"):
            nz = (sels.get(name) or {}).get("noise") or {}
            if nz.get("noisy_dropped_share") is not None:
                a_, b_ = nz["noisy_dropped_share"], nz["clean_dropped_share"]
                verdict = "more often than" if a_ > b_ else "less often than" if a_ < b_ else "as often as"
                L.append(f"- {LABELS[name]} drops swapped pairs {verdict} clean ones ({a_:.0%} vs {b_:.0%}).")
        L.append("")

    runs = {k: v for k, v in res.items() if k.startswith("dpo:")}
    if runs or res.get("eval_theta"):
        L += [
            "## Downstream: DPO from θ, judged on the held-out eval pairs",
            "",
            "Reward accuracy = share of eval pairs with a positive implicit margin vs π_ref; loss = mean DPO "
            "loss (π_ref itself: accuracy 0, loss ln 2 = 0.693). mean ± sample std over seeds, then every "
            "seed's value.",
            "",
            "| model | train pairs | reward accuracy | per seed | eval DPO loss | per seed | mean margin |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        th = res.get("eval_theta")
        if th:
            L.append(
                f"| θ (warm-up, the start of every run) | {d['ingested']['train'] if d else '–'} | "
                f"{fmt(th['reward_accuracy'])} | | {fmt(th['loss'], 4)} | | {fmt(th['mean_margin'], 4)} |"
            )
        summary = {}
        for cond in CONDITIONS:
            rs = [(int(k.split(":")[2]), v) for k, v in runs.items() if k.split(":")[1] == cond]
            if not rs:
                continue
            rs.sort()
            acc = [v["eval"]["reward_accuracy"] for _, v in rs]
            loss = [v["eval"]["loss"] for _, v in rs]
            mar = [v["eval"]["mean_margin"] for _, v in rs]
            summary[cond] = (acc, loss)
            L.append(
                f"| {LABELS[cond]} | {'/'.join(sorted({str(v['n_pairs']) for _, v in rs}))} | {mean_std(acc)} | "
                + ", ".join(f"s{s}: {a:.3f}" for (s, _), a in zip(rs, acc))
                + f" | {mean_std(loss)} | "
                + ", ".join(f"s{s}: {x:.4f}" for (s, _), x in zip(rs, loss))
                + f" | {mean_std(mar)} |"
            )
        L.append("")
        n_eval = next(iter(runs.values()))["eval"]["n_pairs"] if runs else (th or {}).get("n_pairs")
        n_seeds = max((len(v[0]) for v in summary.values()), default=0)
        if n_eval:
            L.append(f"One eval pair moves reward accuracy by 1/{n_eval} = {1 / n_eval:.3f}.")
        if n_seeds < 3:
            L.append(
                f"Only {n_seeds} seed(s) finished of the {len(c['seeds'])} planned: no spread over seeds "
                "can be given, and no difference below is established."
            )
        L.append("")
        if "full" in summary:
            import numpy as np

            fa, fl = np.mean(summary["full"][0]), np.mean(summary["full"][1])
            for cond in ("ldirm", "random", "tif"):
                if cond in summary:
                    a_, l_ = np.mean(summary[cond][0]), np.mean(summary[cond][1])
                    L.append(
                        f"- {LABELS[cond]} vs full data: reward accuracy {a_ - fa:+.3f}, eval loss {l_ - fl:+.4f} "
                        f"({'better' if a_ > fa and l_ < fl else 'worse' if a_ < fa and l_ > fl else 'mixed'}"
                        f" on these {len(summary[cond][0])} seed(s))."
                    )
            L.append("")

    L += [
        "## Caveats",
        "",
        "- A 135M-parameter model, LoRA, tens of training pairs and one short epoch per stage: the paper "
        "used 1B–8B models and thousands of pairs. Correlations and overlaps over this few pairs have wide "
        "sampling error (the random rows above show the chance level), and downstream differences of a "
        "few eval pairs are within seed noise.",
        "- Pairs were restricted to those that fit in max_length (no truncation), which favours "
        f"{ds['fit_bias']}; the 20% label noise is synthetic (swapped labels) on top of "
        f"{ds['short']}'s own label noise.",
        "- The CPU budget set the sizes; every stage's CPU time is given below so that the cost of a larger run "
        "can be extrapolated (training cost grows with pairs × tokens).",
        "",
        "## Times per stage",
        "",
        "Wall time and CPU time (user + system, all processes of the stage). Other jobs shared the 2 cores "
        "(the load column"
        + (
            "; '–' = not recorded, the stages run before it was added, at load 6-27"
            if any(v.get("load_avg") is None for v in st.values() if v.get("status") == "done")
            else ""
        )
        + "): the share of a core this run got is CPU / wall.",
        "",
        "| stage | status | wall time | CPU time | load average (5 min) at the end |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in planned_stages(c):
        v = st.get(k, {"status": "not started"})
        if v["status"] == "running" and not state.get("finished"):
            v = {**v, "status": f"started {v.get('started', '')}, stopped before the end"}
        share = (
            f" ({v['cpu_s'] / v['wall_s']:.0%} of a core)"
            if v.get("cpu_s") and (v.get("wall_s") or 0) > 10
            else ""
        )
        load = f"{v['load_avg']:.1f}" if v.get("load_avg") is not None else "–"
        L.append(
            f"| {k} | {v['status']} | {fmt(v.get('wall_s'), 0)} s | {fmt(v.get('cpu_s'), 0)} s{share} | {load} |"
        )
    total = sum(v.get("wall_s") or 0 for v in st.values())
    L += [
        f"| total | | {total / 60:.1f} min | {sum(v.get('cpu_s') or 0 for v in st.values()) / 60:.1f} min | |",
        "",
        "<details><summary>every prefsift command with its wall time</summary>",
        "",
        "```",
    ]
    L += [
        f"{x['wall_s']:>8.1f} s wall {x.get('cpu_s', float('nan')):>8.1f} s CPU  threads={x.get('threads', 1)}  "
        f"rc={x['rc']}  {x['cmd']}"
        for x in state["commands"]
    ]
    L += ["```", "", "</details>", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(L))
    tmp.replace(out)
