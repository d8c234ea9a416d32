"""Turning a composed Hydra config into a run: data module, module, trainer, summary.

The command-line entry points (``tcmn.cli``) only compose the config and call :func:`run_train`;
tests call it with configs composed through Hydra's compose API.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from tcmn.errors import TCMNError
from tcmn.utils.atomic import atomic_write, atomic_write_text

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, fsynced, then renamed: a crash never leaves a
    truncated ``.ckpt`` and never damages the previous one."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_write(path) as f:
            torch.save(checkpoint, f)


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a callbacks / logger group (None -> [])."""
    out = []
    if not cfg:
        return out
    for _, sub in cfg.items():
        if isinstance(sub, DictConfig) and "_target_" in sub:
            out.append(instantiate(sub))
    return out


def print_config(cfg: DictConfig) -> None:
    log.info("resolved config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def write_summary(output_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` (atomically) into the run folder; ``tcmn-cv`` aggregates these."""
    path = Path(output_dir) / "summary.json"
    atomic_write_text(path, json.dumps(summary, indent=1, default=str, allow_nan=True) + "\n")
    return path


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """One training stage (and the test of its last checkpoint) from a composed config.

    Returns the summary (also written as ``<output_dir>/summary.json``): status, metrics of the
    last validation and of the test, paths of the checkpoints.
    """
    if cfg.get("extras", {}).get("ignore_warnings"):
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*is an invalid version and will not be supported.*")
    if cfg.get("extras", {}).get("print_config"):
        print_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.model, _convert_="all")
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in trainer.loggers:
        lg.log_hyperparams(resolved)

    summary: dict[str, Any] = {
        "status": "running",
        "task_name": cfg.task_name,
        "stage": cfg.model.stage,
        "seed": cfg.seed,
        "fold": cfg.data.get("fold"),
        "output_dir": str(output_dir),
        "config": resolved,
    }
    t0 = time.time()
    if cfg.get("train", True):
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path and not Path(ckpt_path).is_file():
            raise TCMNError(
                f"{ckpt_path}: checkpoint to resume from not found; fix ckpt_path or drop it."
            )
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        summary["val"] = _floats(trainer.callback_metrics)
    summary["train_seconds"] = round(time.time() - t0, 1)
    ckpt_cb = trainer.checkpoint_callback
    if ckpt_cb is not None:
        summary["best_ckpt"] = getattr(ckpt_cb, "best_model_path", "") or None
        summary["last_ckpt"] = getattr(ckpt_cb, "last_model_path", "") or None
    if cfg.get("test", False) and not getattr(trainer, "fast_dev_run", False):
        trainer.test(module, datamodule=datamodule, ckpt_path=None)
        summary["test"] = _floats(trainer.callback_metrics)
        res = getattr(module, "last_results", None)
        if res is not None:
            res["model"].per_video.to_csv(output_dir / "test_per_video.csv", index=False)
            summary["test_tables"] = {
                "per_dataset": res["model"].per_dataset.reset_index().to_dict(orient="records"),
                "per_class": res["model"].per_class.reset_index().to_dict(orient="records"),
                "baseline_per_dataset": res["baseline"]
                .per_dataset.reset_index()
                .to_dict(orient="records"),
            }
    summary["status"] = "ok"
    write_summary(output_dir, summary)
    _finish_wandb()
    return summary


def _finish_wandb() -> None:
    """Close the W&B run so the next multirun job starts its own."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:  # wandb missing or already closed
        pass


def objective(summary: dict[str, Any], metric: str, failed_value: float) -> float:
    """The value a sweeper optimises: the last validation ``metric``, or ``failed_value``."""
    v = summary.get("val", {}).get(metric) if summary.get("status") == "ok" else None
    if v is None or not math.isfinite(v):
        return float(failed_value)
    return float(v)


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


__all__ = ["AtomicCheckpointIO", "run_train", "write_summary", "objective", "in_multirun"]
