"""A shortened `make demo`: the model trained briefly on the synthetic videos beats the
copy-first-mask baseline, follows whichever object's mask it is given, and loses J with a wrong
first mask (the mask-dependence controls of the objectness issue).

The margins are what the demo recipe reaches on every seed with room to spare: this short
version scored J 73-77 against the copy baseline's 16.9 and a mask dependence of 61-67 over
seeds 0-2 (2-core AMD EPYC). With the previous recipe (L_tc at beta 0.1 in both stages) it scored
a dependence of 74, -4 and 1 on seeds 0, 1 and 2: the model ignored its memory on two of three
seeds. The test runs seed 1, on which that recipe fails here, so a recipe that drifts back to
ignoring its memory is caught."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import compose_cfg

from tcmn.experiment import run_eval, run_train

#: minimum gap of J over the copy baseline, of J over every wrong-first-mask control, and of the
#: mask dependence (fractions)
MARGIN = 0.40

SHORT = [
    "seed=1",
    "logger=none",
    "~callbacks.lr_monitor",
    "extras.print_config=false",
    "data.crop_size=128",
    "data.batch_size=4",
    "data.num_workers=1",
    "data.eval_size=128",
    "data.max_eval_videos=6",
    "trainer.check_val_every_n_epoch=100",
]


@pytest.fixture(scope="module")
def demo_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    pre = run_train(
        compose_cfg(
            "train",
            [
                "experiment=demo_pretrain",
                *SHORT,
                "trainer.max_steps=50",
                "data.samples_per_epoch=200",
            ],
            tmp / "pre",
        )
    )
    main = run_train(
        compose_cfg(
            "train",
            [
                "experiment=demo",
                *SHORT,
                "trainer.max_steps=200",
                "data.samples_per_epoch=800",
                f"init_from={pre['last_ckpt']}",
            ],
            tmp / "main",
        )
    )
    return main["last_ckpt"], tmp


@pytest.fixture(scope="module")
def demo_eval(demo_ckpt):
    ckpt, tmp = demo_ckpt
    cfg = compose_cfg(
        "eval",
        [
            f"ckpt={ckpt}",
            "data.eval_size=128",
            "data.max_eval_videos=8",
            "controls=true",
            "n_overlays=0",
        ],
        tmp / "eval",
    )
    return run_eval(cfg)


def test_trained_model_beats_the_copy_first_mask_baseline(demo_eval):
    j = demo_eval["methods"]["tcmn"]["J"]
    base = demo_eval["methods"]["copy_first_mask"]["J"]
    print(f"\nshort demo: J {j:.3f} vs copy-first-mask {base:.3f}")
    assert j > base + MARGIN


def test_a_wrong_first_mask_drops_j(demo_eval):
    j = demo_eval["methods"]["tcmn"]["J"]
    for control in ("control_empty", "control_flip", "control_shift"):
        assert demo_eval["methods"][control]["J"] < j - MARGIN, control
    assert demo_eval["mask_dependence"]["synthetic"] > MARGIN


def test_model_follows_whichever_object_it_is_given(demo_ckpt, tmp_path):
    """On videos with two objects, give one object's mask: the prediction overlaps that object
    far more than the other one, and swapping the given object swaps the result."""
    from hydra.utils import instantiate

    from tcmn.evaluation import numpy_item, predict_video
    from tcmn.inference.session import InferenceSession
    from tcmn.metrics import jaccard

    ckpt, _ = demo_ckpt
    session = InferenceSession.load(ckpt)
    cfg = compose_cfg("eval", [f"ckpt={ckpt}", "data.eval_size=128"], tmp_path)
    dm = instantiate(
        cfg.data, _convert_="all", test_part="test", num_workers=0, max_eval_videos=None
    )
    dm.prepare_data()
    dm.setup("test")
    follow, other = [], []
    for item in dm.test_dataloader():
        item = numpy_item(item)
        if len(item["objects"]) < 2 or len(set(item["given_frames"].values())) != 1:
            continue
        labels = item["labels"]
        t0 = next(iter(item["given_frames"].values()))
        for given, rival in ((1, 2), (2, 1)):
            m = np.where(labels[t0] == given, 1, 0).astype(np.uint8)
            pred = predict_video(session, item, {t0: (m, [1])})
            later = range(t0 + 1, len(labels))
            follow.append(np.mean([jaccard(pred[t] == 1, labels[t] == given) for t in later]))
            other.append(np.mean([jaccard(pred[t] == 1, labels[t] == rival) for t in later]))
    assert len(follow) >= 4, "the synthetic test part should hold two-object videos"
    print(
        f"\nJ with the given object {np.mean(follow):.3f}, with the other object {np.mean(other):.3f}"
    )
    assert np.mean(follow) > np.mean(other) + 0.3
