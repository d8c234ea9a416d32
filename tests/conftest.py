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
    """Compose a config of conf/ with Hydra's compose API, as the CLI would, writing under tmp_path.

    ``paths.data_dir`` is shared by the whole test session (``TCMN_TEST_DATA``) so the synthetic
    dataset is generated once.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(tmp_path)
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.data_dir = os.environ["TCMN_TEST_DATA"]
        cfg.paths.work_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture(scope="session", autouse=True)
def _test_data_dir(tmp_path_factory):
    """One data folder for the session (the synthetic set is generated there on first use)."""
    if "TCMN_TEST_DATA" not in os.environ:
        os.environ["TCMN_TEST_DATA"] = str(tmp_path_factory.mktemp("data"))
    return Path(os.environ["TCMN_TEST_DATA"])
