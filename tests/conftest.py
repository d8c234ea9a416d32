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
