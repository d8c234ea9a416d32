"""Seeding of the main process and of every DataLoader worker (torch, numpy, random)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for DataLoaders: derive every library's seed from torch's worker seed.

    torch gives each worker ``base_seed + worker_id``; numpy, ``random`` and albumentations
    (which draws from numpy and ``random``) are seeded from it so a seed reproduces the batches.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
