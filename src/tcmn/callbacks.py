"""Lightning callbacks of the project (checkpoints, Weights & Biases media) and W&B run settings."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict

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


# --------------------------------------------------------------------------------------------
# Weights & Biases
# --------------------------------------------------------------------------------------------

WANDB_TARGET_SUFFIX = "WandbLogger"


def wandb_run_settings(cfg: DictConfig) -> dict[str, Any]:
    """The W&B ``group``, ``name`` and extra ``tags`` of the run composed in ``cfg``.

    * group: ``<task_name>`` for a single run; ``<task_name>-<sweep folder>`` for every job of a
      Hydra multirun, so the runs of one sweep share a group.
    * name: a sweep job's values of the swept keys (e.g. ``data.fold=2,seed=1``; see
      :func:`swept_overrides`); None (W&B picks one) for a single run.
    * tags: ``stage:<stage>``, ``seed:<seed>``, ``fold:<k>`` (when a fold is set) and
      ``leave_out:<dataset>`` (leave-one-dataset-out).

    Returns:
        ``{"group": str, "name": str | None, "tags": list[str]}``.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    data = cfg.get("data") or {}
    tags = [f"stage:{cfg.model.stage}", f"seed:{cfg.seed}"]
    if data.get("fold") is not None:
        tags.append(f"fold:{data.get('fold')}")
    leave_out = data.get("leave_out")
    if leave_out:
        names = [leave_out] if isinstance(leave_out, str) else list(leave_out)
        tags += [f"leave_out:{n}" for n in names]
    group, name = str(cfg.task_name), None
    try:
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            group = f"{cfg.task_name}-{Path(str(hc.sweep.dir)).name}"
            name = ",".join(swept_overrides(hc)) or f"job{hc.job.num}"
            name = name[:128]
    except ValueError:  # Hydra not initialised (a config built by hand)
        pass
    return {"group": group, "name": name, "tags": [t[:64] for t in tags]}


def swept_overrides(hydra_cfg: Any) -> list[str]:
    """The overrides of a multirun job whose keys the sweep varies, sorted (e.g. ``["seed=1"]``).

    Swept keys: those with a sweep value (``a=1,2``, ``range(...)``) in the sweep's
    ``multirun.yaml`` and those of ``hydra.sweeper.params`` (Optuna's search space).

    Args:
        hydra_cfg: the job's Hydra config (``HydraConfig.get()``).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    keys = set((hydra_cfg.sweeper.get("params") or {}).keys())
    try:
        multirun = OmegaConf.load(Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml")
        task = list(OmegaConf.select(multirun, "hydra.overrides.task") or [])
        keys |= {o.get_key_element() for o in parser.parse_overrides(task) if o.is_sweep_override()}
    except Exception:  # no multirun.yaml (another launcher's node) or unparsable: params only
        pass
    keys = {k.lstrip("+~") for k in keys}
    job = [str(o) for o in hydra_cfg.overrides.task]
    return sorted(o for o in job if o.split("=", 1)[0].lstrip("+~") in keys)


def apply_wandb_run_settings(cfg: DictConfig) -> None:
    """Fill the W&B logger entries of ``cfg.logger`` with :func:`wandb_run_settings`, in place.

    ``group`` and ``name`` are filled only where the config leaves them null; the extra tags are
    appended to the configured ones. Configs without a ``WandbLogger`` entry are left alone.
    """
    loggers = cfg.get("logger")
    if not isinstance(loggers, DictConfig):
        return
    entries = [
        v
        for v in loggers.values()
        if isinstance(v, DictConfig) and str(v.get("_target_", "")).endswith(WANDB_TARGET_SUFFIX)
    ]
    if not entries:
        return
    settings = wandb_run_settings(cfg)
    with open_dict(cfg):
        for e in entries:
            if e.get("group") is None:
                e.group = settings["group"]
            if e.get("name") is None:
                e.name = settings["name"]
            tags = [str(t) for t in (e.get("tags") or [])]
            e.tags = list(dict.fromkeys(tags + settings["tags"]))


class WandbMedia(pl.Callback):
    """Log validation / test media to Weights & Biases: overlays and metric tables.

    After every validation (and the test) it logs

    * ``<val|test>/overlays``: for the first ``n_videos`` videos that rank 0 evaluated, a Fig. 2
      strip (:func:`tcmn.viz.overlay_strip`): the given first-frame mask (green), then
      ``n_frames - 1`` later frames with the prediction (red) and the ground-truth contour (white);
    * ``<val|test>/per_video``, ``per_dataset``, ``per_class``: the :class:`tcmn.metrics.VOSResult`
      tables of the model (``TCMNModule.last_results``) as ``wandb.Table``.

    The predictions come from ``validation_step``'s output (``{"pred": uint8 [T, H, W]}``), so
    nothing is recomputed or stored beyond ``n_videos`` strips. With no ``WandbLogger`` (CSV,
    TensorBoard, none) it does nothing.

    Args:
        n_videos: overlay strips per validation (0 = none).
        n_frames: panels per strip (the given frame included).
        tables: log the metric tables.
    """

    def __init__(self, n_videos: int = 4, n_frames: int = 5, tables: bool = True):
        self.n_videos = int(n_videos)
        self.n_frames = int(n_frames)
        self.tables = bool(tables)
        self._strips: list[tuple[str, Any]] = []

    @staticmethod
    def _wandb_loggers(trainer: pl.Trainer) -> list:
        from pytorch_lightning.loggers import WandbLogger

        return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]

    def _active(self, trainer: pl.Trainer) -> bool:
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and bool(self._wandb_loggers(trainer))
        )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        self._strips = []

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx=0
    ) -> None:
        if len(self._strips) >= self.n_videos or not self._active(trainer):
            return
        if not isinstance(outputs, Mapping) or outputs.get("pred") is None:
            return
        from tcmn.evaluation import numpy_item
        from tcmn.viz import overlay_strip

        item = numpy_item(batch)
        if not item["given_frames"]:
            return
        strip = overlay_strip(item, outputs["pred"], self.n_frames)
        self._strips.append((f"{item['dataset']}/{item['video']}", strip))

    on_test_batch_end = on_validation_batch_end

    def _log(self, trainer: pl.Trainer, pl_module, prefix: str) -> None:
        if not self._active(trainer):
            return
        step = trainer.global_step
        results = getattr(pl_module, "last_results", None)
        for lg in self._wandb_loggers(trainer):
            if self._strips:
                lg.log_image(
                    key=f"{prefix}/overlays",
                    images=[s for _, s in self._strips],
                    caption=[c for c, _ in self._strips],
                    step=step,
                )
            if self.tables and results is not None:
                res = results["model"]
                lg.log_table(key=f"{prefix}/per_video", dataframe=res.per_video, step=step)
                for name in ("per_dataset", "per_class"):
                    table = getattr(res, name).reset_index()
                    lg.log_table(key=f"{prefix}/{name}", dataframe=table, step=step)
        self._strips = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._log(trainer, pl_module, "test")


def checkpoint_paths(trainer: pl.Trainer) -> tuple[str | None, str | None]:
    """(best checkpoint by the monitored metric, latest checkpoint) of a trainer's callbacks."""
    best = next(
        (cb.best_model_path for cb in trainer.checkpoint_callbacks if cb.best_model_path), None
    )
    last = next(
        (cb.last_model_path for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)), None
    )
    return best, last or None
