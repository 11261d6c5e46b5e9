"""Markdown tables from the JSON lines that ``scripts/cxr_experiments.py`` writes.

Usage::

    python scripts/cxr_table.py /work/scratch/r-cxr/ablation.jsonl [/work/scratch/r-cxr/final.jsonl]

One row per run: validation AUROC (95 % bootstrap CI), ECE, the stored threshold's sensitivity
and specificity, AUROC and specificity under each held-out shift, the worst shifted AUROC, the
Grad-CAM lung-heat fraction (all films / pneumonia films / normal films; and on pneumonia films
against the lung mask without mirror completion, when recorded) and marker heat, the NIH CXR14 sample's
share above threshold, and the training time.
"""

from __future__ import annotations

import json
import sys

SHIFTS = ("gamma_0.5", "gamma_2.0", "contrast_0.5", "equalised", "blur_noise", "zoom_out_0.8", "markers_masked")


def rows(paths):
    for p in paths:
        with open(p) as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def main(paths) -> None:
    head = (["run", "epochs", "val AUROC (95% CI)", "ECE", "thr", "sens", "spec"]
            + [f"{s} AUROC/spec" for s in SHIFTS] + ["worst shift AUROC", "lung heat (all/pneu/normal)",
                                                       "pneu, unmirrored mask", "marker heat",
                                                       "NIH > thr", "train min (threads)"])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows(paths):
        v, s, sal = r["validation"], r["shifts"], r["saliency"]
        shifted = [s[k]["auroc"] for k in SHIFTS if k in s]
        cells = [r["config"], str(r["epochs"]), f"{v['auroc']:.4f} ({v['auroc_ci'][0]:.4f}-{v['auroc_ci'][1]:.4f})",
                 f"{v['ece']:.3f}", f"{v['threshold']:.3f}", f"{v['sensitivity']:.3f}", f"{v['specificity']:.3f}"]
        cells += [f"{s[k]['auroc']:.3f}/{s[k]['specificity']:.2f}" if k in s else "-" for k in SHIFTS]
        cells += [f"{min(shifted):.3f}",
                  f"{sal['lung_mean']:.2f}/{sal['lung_mean_positive']:.2f}/{sal['lung_mean_negative']:.2f}",
                  f"{sal['lung_mean_positive_unmirrored']:.2f}" if "lung_mean_positive_unmirrored" in sal else "-",
                  f"{sal['marker_mean']:.3f}", f"{r['nih']['above_threshold']:.2f}",
                  f"{r['train_seconds'] / 60:.1f} ({r['threads']})"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
