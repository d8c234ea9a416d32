"""The real-data pipeline, shortened (`make results` is the full benchmark): CVC-ClinicDB from
../shared/data/real converted, fold 0 of the sequence-grouped 5-fold split, the CPU recipe's main
stage for a few steps from ImageNet MobileNetV2 weights, then the one-shot evaluation of the
held-out sequences: the trained model beats the copy-first-mask baseline."""

from __future__ import annotations

import pytest

from tcmn.data.converters import cvc_clinicdb
from tcmn.data.splits import load_splits, make_splits, select
from tcmn.experiment import compose_config, run_eval, run_train

EVAL_SIZE = "data.eval_size=128"
SIZE = [
    "data.crop_size=[96,128]",
    "data.augment.long_side=128",
    EVAL_SIZE,
    "model.propagation.size=128",
]


@pytest.mark.real_data
def test_short_cvc_fold_beats_the_copy_first_mask_baseline(real_data, tmp_path):
    data = tmp_path / "data"
    cvc_clinicdb.convert(real_data / "cvc_clinicdb", data / "cvc_clinicdb")
    make_splits(data / "cvc_clinicdb")
    splits = load_splits(data / "cvc_clinicdb")
    test_videos = set(select(splits, "test", fold=0))
    assert test_videos and not test_videos & set(select(splits, "train", fold=0))  # by sequence

    overrides = [
        "experiment=cpu_cvc",
        *SIZE,
        "logger=none",
        "~callbacks.lr_monitor",
        "extras.print_config=false",
        "data.batch_size=4",
        "data.num_workers=1",
        "data.samples_per_epoch=1200",
        "trainer.max_steps=300",
        "trainer.check_val_every_n_epoch=100",
        "model.loss.start_warm=60",
        "model.loss.end_warm=200",
    ]
    main = run_train(compose_config("train", overrides, tmp_path / "main", data))
    evaluation = ["data=cvc", f"ckpt={main['last_ckpt']}", "fold=0", "split=test", "n_overlays=0"]
    summary = run_eval(compose_config("eval", [*evaluation, EVAL_SIZE], tmp_path / "eval", data))
    j, base = summary["methods"]["tcmn"]["J"], summary["methods"]["copy_first_mask"]["J"]
    print(
        f"\nshort CVC fold 0: J {j:.3f} vs copy-first-mask {base:.3f} on {summary['n_videos']} sequences"
    )
    assert summary["n_videos"] == len(test_videos)
    assert j > base + 0.03
