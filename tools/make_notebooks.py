"""Write notebooks/*.ipynb from the cell sources below (outputs empty, as committed).

Usage: python tools/make_notebooks.py [--check]   (--check: exit 1 when a notebook differs)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]

SETUP = """import os
from pathlib import Path

# The test suite runs this notebook top to bottom at tiny settings (TCMN_NOTEBOOK_TINY=1).
TINY = os.environ.get("TCMN_NOTEBOOK_TINY") == "1"
WORK = Path(os.environ.get("TCMN_NOTEBOOK_DIR", "../logs/notebooks")).resolve()
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
DATA = WORK / "data"
print("working folder:", WORK)"""

QUICKSTART = [
    (
        "md",
        """# TCMN quickstart

One-shot video object segmentation on the embedded synthetic videos, end to end:
generate data, train both stages briefly, propagate one video from its first mask, and score it
against the copy-first-mask baseline. On a 2-core CPU the full settings take about 8 minutes;
everything is written under `logs/notebooks`.""",
    ),
    ("code", SETUP),
    (
        "md",
        """## 1. Data

Procedural medical-like videos (endoscopy-like polyps and lesions, ultrasound-like ventricles
and atria) in the prepared layout, with a `splits.json` that holds the `atrium` class out of
training (the unseen-class test).""",
    ),
    (
        "code",
        """import matplotlib.pyplot as plt

from tcmn.data.layout import PreparedDataset
from tcmn.data.splits import load_splits, make_splits
from tcmn.data.synthetic import generate_synthetic
from tcmn.viz import overlay, strip

root = DATA / "synthetic"
if not (root / "splits.json").exists():
    generate_synthetic(root, n_videos=24 if TINY else 60, n_frames=12 if TINY else 20, size=(128, 128), seed=0)
    make_splits(root, holdout_classes=("atrium",))
ds = PreparedDataset(root)
splits = load_splits(root)
print(len(ds), "videos:", len(splits["train"]), "train,", len(splits["test"]), "test,", len(splits["unseen"]), "unseen-class")

video = splits["test"][0]
frames, (labels, _) = ds.frames(video), ds.masks(video)
plt.figure(figsize=(12, 3))
plt.imshow(strip([overlay(frames[t], labels[t]) for t in range(0, len(frames), max(1, len(frames) // 5))]))
plt.axis("off")
plt.title(f"{video}: frames with their masks")
plt.show()""",
    ),
    (
        "md",
        """## 2. Train: pretraining on pseudo-clips, then the main stage

The same configs as `make demo` (`conf/experiment/demo_pretrain.yaml`, `demo.yaml`), composed
with Hydra's compose API (`tcmn.experiment.compose_config`), so any command-line override works
here too.""",
    ),
    (
        "code",
        """from tcmn.experiment import compose_config, run_train

steps = dict(pre=4, main=8) if TINY else dict(pre=100, main=250)
common = ["extras.print_config=false", "logger=csv", "~callbacks.lr_monitor"]
if TINY:
    common += ["trainer.log_every_n_steps=1", "data.crop_size=64", "data.batch_size=2", "data.num_workers=0", "data.samples_per_epoch=4", "data.eval_size=64", "data.max_eval_videos=1"]
pre = run_train(compose_config("train", ["experiment=demo_pretrain", f"trainer.max_steps={steps['pre']}", *common], WORK / "pretrain", DATA))
main = run_train(compose_config(
    "train",
    ["experiment=demo", f"trainer.max_steps={steps['main']}", f"init_from={pre['last_ckpt']}", *common],
    WORK / "main",
    DATA,
))
print("checkpoint:", main["last_ckpt"])""",
    ),
    (
        "code",
        """import pandas as pd

log = pd.read_csv(next((WORK / "main" / "out").rglob("metrics.csv")))
loss = log.dropna(subset=["train/loss"])
plt.figure(figsize=(6, 3))
plt.plot(loss["step"], loss["train/loss"], label="L")
plt.plot(loss["step"], loss["train/loss_bce"], label="L_bce")
plt.plot(loss["step"], loss["train/loss_tc"], label="L_tc")
plt.xlabel("step")
plt.legend()
plt.title("training losses (main stage)")
plt.show()""",
    ),
    (
        "md",
        """## 3. Propagate one video from its first mask

`InferenceSession` is how validation, `tcmn-eval`, `tcmn-predict` and the benchmarks propagate: it
reads the checkpoint with its propagation settings, puts the first frame and its mask into
memory, segments every later frame from memory and adds every 5th frame to the memory. Each
frame's result streams out with its label map, probabilities and a confidence.""",
    ),
    (
        "code",
        """from tcmn.inference.session import InferenceSession
from tcmn.viz import figure2_panel

session = InferenceSession.load(main["last_ckpt"])
print("propagation settings:", session.settings.to_dict())
results = list(session.propagate(frames, {0: (labels[0], None)}))
pred = {r.index: r.labels for r in results}
print("confidence per frame:", [round(r.confidence, 2) for r in results])
shown = list(range(1, len(frames), max(1, len(frames) // 5)))
panels = [figure2_panel(frames[0], given=labels[0])] + [figure2_panel(frames[t], pred=pred[t], gt=labels[t]) for t in shown]
plt.figure(figsize=(14, 3))
plt.imshow(strip(panels))
plt.axis("off")
plt.title("given mask (green), prediction (red), ground-truth contour (white)")
plt.show()""",
    ),
    (
        "md",
        """## 4. Evaluate: J / F / Dice against the copy-first-mask baseline

`run_eval` is `tcmn-eval`: held-out test videos, one-shot from each object's first frame, with
the wrong-first-mask controls (`controls=true`) whose drop in J is the mask dependence.""",
    ),
    (
        "code",
        """from tcmn.experiment import run_eval

extra = ["data.eval_size=64", "data.max_eval_videos=2"] if TINY else ["data.eval_size=128"]
summary = run_eval(compose_config("eval", [f"ckpt={main['last_ckpt']}", "split=test", "controls=true", *extra], WORK / "eval", DATA))
table = pd.read_csv(WORK / "eval" / "out" / "per_dataset.csv")
table.pivot_table(index="method", columns="dataset", values=["J", "F", "Dice"]).round(3)""",
    ),
    (
        "code",
        """print("mask dependence (J true mask - max J wrong masks):", {k: round(v, 3) for k, v in summary["mask_dependence"].items()})""",
    ),
]

RESULTS = [
    (
        "md",
        """# Results

Reads what `tcmn-eval` and training wrote (CSV / JSON, and W&B offline runs) and draws the
figures of the paper's kind: per-frame J of each video against the copy-first-mask baseline, the
qualitative figure, and the cross-validation table. By default it reads the quickstart's outputs
(`logs/notebooks`); point `WORK` at `logs/demo` or `logs/results` for the other runs.""",
    ),
    (
        "code",
        SETUP
        + """
EVAL = WORK / "eval" / "out"
if not (EVAL / "per_frame.csv").exists():  # the demo's layout
    EVAL = WORK / "eval_test"
print("evaluation folder:", EVAL)""",
    ),
    ("md", "## Per-frame J against frame index, model and copy-first-mask baseline"),
    (
        "code",
        """import json

import matplotlib.pyplot as plt
import pandas as pd

frames = pd.read_csv(EVAL / "per_frame.csv")
videos = frames[["dataset", "video", "object"]].drop_duplicates().head(6)
fig, axes = plt.subplots(1, len(videos), figsize=(3 * len(videos), 2.6), sharey=True, squeeze=False)
for ax, (_, v) in zip(axes[0], videos.iterrows()):
    sel = frames[(frames.video == v.video) & (frames.object == v.object)]
    for method, style in (("tcmn", "-"), ("copy_first_mask", "--")):
        s = sel[sel.method == method]
        ax.plot(s["frame"], s["J"], style, label=method)
    ax.set_title(f"{v.video} / {v.object}", fontsize=8)
    ax.set_xlabel("frame")
axes[0][0].set_ylabel("J")
axes[0][0].legend(fontsize=7)
plt.tight_layout()
plt.show()""",
    ),
    (
        "code",
        """per_video = pd.read_csv(EVAL / "per_video.csv")
wide = per_video.pivot_table(index=["dataset", "video", "object"], columns="method", values="J")
plt.figure(figsize=(4, 4))
plt.scatter(wide["copy_first_mask"], wide["tcmn"])
plt.plot([0, 1], [0, 1], "k:")
plt.xlabel("J, copy-first-mask baseline")
plt.ylabel("J, TCMN")
plt.title("per video")
plt.show()
summary = json.loads((EVAL / "summary.json").read_text())
pd.DataFrame(summary["methods"]).T[["J", "F", "Dice", "J&F"]].round(3)""",
    ),
    ("md", "## Qualitative figure (paper Fig. 2 style)"),
    (
        "code",
        """from PIL import Image

overlays = sorted((EVAL / "overlays").glob("*.png"))
for p in overlays[:3]:
    plt.figure(figsize=(14, 2.5))
    plt.imshow(Image.open(p))
    plt.axis("off")
    plt.title(p.stem, fontsize=8)
    plt.show()
if not overlays:
    print("no overlays in", EVAL)""",
    ),
    ("md", "## Training curves from the W&B offline runs (if any)"),
    (
        "code",
        """from tcmn.wandb_offline import find_offline_runs, read_offline_run

runs = find_offline_runs(WORK)
print(len(runs), "offline W&B run(s) under", WORK)
for run_dir in runs[:3]:
    rec = read_offline_run(run_dir)
    hist = pd.DataFrame(rec["history"])
    if "train/loss" in hist:
        h = hist.dropna(subset=["train/loss"])
        plt.figure(figsize=(5, 2.5))
        plt.plot(h["trainer/global_step"] if "trainer/global_step" in h else h.index, h["train/loss"])
        plt.title(run_dir.name, fontsize=8)
        plt.show()""",
    ),
    (
        "md",
        """## Cross-validation table

`tcmn-cv dir=<sweep or results folder>` writes `cv_summary.md` / `cv_per_dataset.csv`; here the
same aggregation is called on whatever evaluation summaries lie under `WORK`.""",
    ),
    (
        "code",
        """from IPython.display import Markdown

from tcmn.cv import aggregate, find_runs, markdown_table

runs = find_runs(WORK)
print([f"{r.path.name}: {r.status}" for r in runs])
Markdown(markdown_table(aggregate(runs), "dataset"))""",
    ),
]


def build(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, src) in enumerate(cells):
        cell = (
            nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        )
        cell.id = f"cell-{i:02d}"  # stable ids: the files only change when the sources do
        nb.cells.append(cell)
    return nb


NOTEBOOKS = {"01_quickstart.ipynb": QUICKSTART, "02_results.ipynb": RESULTS}


def main() -> int:
    check = "--check" in sys.argv
    bad = 0
    for name, cells in NOTEBOOKS.items():
        path = ROOT / "notebooks" / name
        text = nbformat.writes(build(cells), version=4) + "\n"
        if check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date: run `python tools/make_notebooks.py`.")
                bad = 1
        else:
            path.write_text(text)
    return bad


if __name__ == "__main__":
    raise SystemExit(main())
