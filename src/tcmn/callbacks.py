"""Lightning callbacks of the project."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class LastCheckpoint(pl.Callback):
    """Write ``<dirpath>/last.ckpt`` after the last training batch of every epoch (and at
    ``max_steps``), the state from which ``ckpt_path=`` resumes a run exactly.

    It is saved from ``on_train_batch_end`` rather than ``on_train_epoch_end``: Lightning restores
    a checkpoint written at the end of an epoch's last batch as "next epoch, first batch", whereas
    one written in ``on_train_epoch_end`` restarts with the old epoch's batch counters and draws the
    next epoch's data too early. The file is replaced atomically (the trainer's checkpoint IO).

    Attributes:
        last_model_path: path of the last checkpoint written ('' before the first).
    """

    def __init__(self, dirpath: str, filename: str = "last"):
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.last_model_path = ""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int
    ) -> None:
        epoch_loop = trainer.fit_loop.epoch_loop
        end_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        at_max = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        if (end_of_epoch or at_max) and not trainer.sanity_checking and epoch_loop is not None:
            path = self.dirpath / f"{self.filename}.ckpt"
            trainer.save_checkpoint(path)
            self.last_model_path = str(path)

    def state_dict(self) -> dict:
        return {"last_model_path": self.last_model_path}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_model_path = state_dict.get("last_model_path", "")
