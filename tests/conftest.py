"""Shared test set-up: quiet, offline, deterministic, small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("TCMN_REAL_DATA", REPO.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (or $TCMN_REAL_DATA); the test is skipped when it is absent."""
    if not (REAL_DATA / "cvc_clinicdb").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


def compose_cfg(config_name: str, overrides: list[str], tmp_path: Path):
    """Compose a config of conf/ as the CLI would, writing under tmp_path.

    ``paths.data_dir`` is shared by the whole test session (``TCMN_TEST_DATA``) so the synthetic
    dataset is generated once.
    """
    from tcmn.experiment import compose_config

    return compose_config(config_name, overrides, tmp_path, os.environ["TCMN_TEST_DATA"])


@pytest.fixture(scope="session", autouse=True)
def _test_data_dir(tmp_path_factory):
    """One data folder for the session (the synthetic set is generated there on first use)."""
    if "TCMN_TEST_DATA" not in os.environ:
        os.environ["TCMN_TEST_DATA"] = str(tmp_path_factory.mktemp("data"))
    return Path(os.environ["TCMN_TEST_DATA"])


#: the keyword arguments of a tiny random-init TCMN for unit tests
TINY_NET = dict(
    query_backbone="resnet18",
    value_backbone="resnet18",
    key_dim=16,
    qfeat_dim=32,
    value_dim=32,
    decoder_dims=(32, 16, 8),
)

#: the data overrides of a tiny CPU run (64 px crops, batches of 2, no loader workers)
TINY_DATA = [
    "data.crop_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.samples_per_epoch=2",
    "data.eval_size=64",
    "data.max_eval_videos=1",
]


def small_synthetic(root: Path, n_videos: int, **splits) -> Path:
    """A data folder ``root`` holding a small synthetic dataset (``n_videos`` videos of 6 frames,
    64 px) and its splits (``splits``: :func:`tcmn.data.splits.make_splits` arguments)."""
    from tcmn.data.splits import make_splits
    from tcmn.data.synthetic import generate_synthetic

    generate_synthetic(root / "synthetic", n_videos=n_videos, n_frames=6, size=(64, 64), seed=0)
    make_splits(root / "synthetic", **splits)
    return root


def assert_tool_check_passes(script: str) -> None:
    """``python tools/<script> --check`` exits 0 (a generated file is up to date)."""
    import subprocess
    import sys

    check = subprocess.run(
        [sys.executable, str(REPO / "tools" / script), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
