"""Does rsLoRA scaling (alpha/sqrt(r) instead of alpha/r) change the demo's rank trend?

Reuses a finished `audit demo` directory (its pre-trained base, fine-tuning data, probe data and the base
and full-FT probe runs), fine-tunes LoRA at each rank with and without rsLoRA exactly as the demo does
(same steps, batch, seed, learning-rate grid with pilot runs, held-out split, default alpha = 2r), runs
the demo's probes on each, and prints per behaviour the value and the share left in place
((method - full FT) / (base - full FT)) for both scalings.

    flock /tmp/audit-heavy.lock python benchmarks/rslora_rank_trend.py --demo audit-demo-quick \\
        --out /tmp/rslora --ranks 1,4,16,64 [--quick]

With alpha = 2r (the demo's default) the scaling is 2 at every rank without rsLoRA and 2*sqrt(r) with it
(2, 4, 8, 16 for r = 1, 4, 16, 64), so rank 1 is the same run both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", required=True, type=Path, help="a finished `audit demo` output directory")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ranks", default="1,4,16,64")
    ap.add_argument("--quick", action="store_true", help="the demo directory was made with --quick")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from audit.api import run_probes
    from audit.finetune.api import finetune
    from audit.finetune.lr_grid import lr_selection_of
    from audit.lab import corpus as corpus_mod
    from audit.lab.demo_plan import behaviours, make_plan
    from audit.lab.demo_summary import _metric, _overall, remaining
    from audit.lm.models import load
    from audit.results import write_json_atomic

    plan = make_plan(quick=args.quick, seed=args.seed)
    demo = args.demo
    base_dir, ft_path = demo / "base", demo / "data" / "finetune.jsonl"
    probe_data = corpus_mod.write_probe_data(
        args.out / "probe-data", seed=args.seed,
        size=corpus_mod.ProbeSize(target_prompts=plan.target_prompts, other_prompts=plan.other_prompts,
                                  decisions=plan.decisions_rows))
    probes = ["toxicity", "crows_pairs", "decisions", "rl:lending", "shift"]
    options = dict(plan.probe_options)
    options["toxicity"] = {**options["toxicity"], "scorer": f"lexicon:{probe_data['lexicon']}"}
    options["shift"] = {**options["shift"], "corpora": [str(ft_path), probe_data["shift_neutral"],
                                                        probe_data["shift_groups"]],
                        "watchlist": probe_data["lexicon"]}
    data = {k: probe_data[k] for k in ("toxicity", "crows_pairs", "decisions")}
    base_h, ref_h = load(base_dir), load(demo / "finetunes" / "full-ft")
    base_run, ref_run = demo / "runs" / "base", demo / "runs" / "full-ft"

    rows, t0 = [], time.time()
    for r in [int(x) for x in args.ranks.split(",")]:
        for rs in (False, True):
            label = f"lora-r{r}-{'rslora' if rs else 'standard'}"
            d, rd = args.out / "finetunes" / label, args.out / "runs" / label
            if not (d / "manifest.json").is_file():
                finetune(method="lora", model=str(base_dir), data=str(ft_path), out=str(d), rank=r, use_rslora=rs,
                         steps=plan.ft_steps, batch_size=plan.ft_batch_size, max_length=plan.ft_max_length,
                         seed=args.seed, lr_grid=plan.ft_lr_grid["lora"], lr_pilot_steps=plan.ft_lr_pilot_steps,
                         heldout_fraction=plan.ft_heldout_fraction, overwrite=True, log_every=1000)
            if not (rd / "manifest.json").is_file() or not json.loads((rd / "manifest.json").read_text()).get(
                    "finished_at"):
                run_probes(load(d), probes, rd, base=base_h, reference=ref_h, data=data, options=options,
                           seed=args.seed, label=label, cache_dir=args.out / ".audit-cache", overwrite=True)
            sel = lr_selection_of(d) or {}
            row = {"rank": r, "rslora": rs, "scaling": 2 * r / (r ** 0.5 if rs else r),
                   "chosen_lr": sel.get("chosen_lr"), "final_heldout_loss": sel.get("final_heldout_loss")}
            for b in behaviours():
                get = (lambda x, b=b: _metric(x, b.probe, b.metric, b.group)) if b.group else \
                    (lambda x, b=b: _overall(x, b.probe, b.metric))
                m, mb, mf = get(rd), get(base_run), get(ref_run)
                v = m.get("value") if m else None
                row[b.name] = v
                row[b.name + " remaining"] = remaining(v, mb.get("value") if mb else None,
                                                       mf.get("value") if mf else None)
            sc = _overall(rd, "shift", "shift_captured")
            row["shift captured"] = sc.get("value") if sc else None
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json_atomic(args.out / "rslora_rank_trend.json", {"rows": rows, "seconds": round(time.time() - t0, 1),
                                                            "demo": str(demo), "quick": args.quick})
    names = ["shift captured"] + [b.name for b in behaviours()]
    print("rank | scaling std/rs | lr std/rs | held-out loss std/rs | " + " | ".join(names))
    by = {(x["rank"], x["rslora"]): x for x in rows}
    fmt = (lambda v: "-" if v is None else f"{v:.3g}")  # noqa: E731
    for r in sorted({x["rank"] for x in rows}):
        s, q = by[(r, False)], by[(r, True)]
        cells = [f"{fmt(s['scaling'])}/{fmt(q['scaling'])}", f"{fmt(s['chosen_lr'])}/{fmt(q['chosen_lr'])}",
                 f"{fmt(s['final_heldout_loss'])}/{fmt(q['final_heldout_loss'])}"]
        cells += [f"{fmt(s[n])}/{fmt(q[n])}" for n in names]
        print(f"{r} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
