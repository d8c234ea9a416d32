"""Turning a composed Hydra config into a run: data module, module, trainer, summary.

The command-line entry points (``tcmn.cli``) only compose the config and call :func:`run_train`;
tests call it with configs composed through Hydra's compose API.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.plugins.io import TorchCheckpointIO

from tcmn.checks import EVAL, TRAIN, check_settings
from tcmn.errors import TCMNError
from tcmn.utils.atomic import atomic_write, atomic_write_text, remove_leftovers

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


def compose_config(
    config_name: str,
    overrides: list[str] | None = None,
    output_dir: str | Path = ".",
    data_dir: str | Path | None = None,
) -> DictConfig:
    """Compose a config of ``conf/`` as the command line would, for use from Python (notebooks,
    tests): the run writes into ``<output_dir>/out``, datasets are read from ``data_dir``
    (default ``<output_dir>/data``).

    Example::

        cfg = compose_config("train", ["experiment=demo", "trainer.max_steps=50"], "runs/try")
        summary = run_train(cfg)
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from tcmn.utils.paths import CONF_DIR

    root = Path(output_dir).resolve()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides or []), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.output_dir = str(root / "out")
        cfg.paths.log_dir = str(root / "logs")
        cfg.paths.data_dir = str(Path(data_dir).resolve()) if data_dir else str(root / "data")
        cfg.paths.work_dir = str(root)
        cfg.hydra.runtime.output_dir = str(root / "out")
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


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
    check_settings(cfg, TRAIN)  # every bad setting is one sentence before any work starts
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True)

    from tcmn.callbacks import apply_wandb_run_settings

    apply_wandb_run_settings(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.model, _convert_="all")
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:  # logger=none: nothing would receive the learning rate
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    for cb in callbacks:  # a checkpoint save killed half-way left a temporary file there
        folder = getattr(cb, "dirpath", None)
        for p in remove_leftovers(folder) if folder else []:
            log.info("removed %s, left by an interrupted checkpoint save", p)
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    _check_no_ddp_spawn_in_multirun(trainer)
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
    from tcmn.callbacks import checkpoint_paths

    best, last = checkpoint_paths(trainer)
    summary["best_ckpt"], summary["last_ckpt"] = best, last
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
                "baseline_per_class": res["baseline"]
                .per_class.reset_index()
                .to_dict(orient="records"),
            }
    summary["status"] = "ok"
    write_summary(output_dir, summary)
    _finish_wandb()
    return summary


def _finish_wandb() -> None:
    """Close the W&B run so the next multirun job starts its own.

    Called while an exception is being handled (a failed multirun job), the run is marked
    failed (exit code 1).
    """
    import sys

    try:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if sys.exc_info()[0] is not None else 0)
    except Exception:  # wandb missing or already closed
        pass


def _check_no_ddp_spawn_in_multirun(trainer: pl.Trainer) -> None:
    """Refuse DDP that Lightning would start by re-running the command inside a local multirun.

    Lightning's subprocess launcher re-runs ``sys.argv`` for the other ranks, which in a Hydra
    multirun is the whole sweep; under SLURM (``hydra/launcher=slurm``) or torchrun the ranks
    are started outside and this is fine.
    """
    from pytorch_lightning.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher,
    )

    launcher = getattr(trainer.strategy, "launcher", None)
    spawns = isinstance(launcher, _SubprocessScriptLauncher) and not (
        launcher.cluster_environment.creates_processes_externally
    )
    if spawns and in_multirun():
        raise TCMNError(
            "DDP with several local processes cannot run inside a local multirun (Lightning "
            "would re-run the whole sweep in each process); run the jobs one by one, or send "
            "the sweep to SLURM with hydra/launcher=slurm."
        )


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


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset part; write tables, overlays and ``summary.json``.

    Methods scored side by side: ``tcmn`` (the model), ``copy_first_mask`` (baseline) and, with
    ``controls``, ``control_empty`` / ``control_flip`` / ``control_shift`` (wrong first masks).
    The mask dependence is J(tcmn) - max J(controls), per dataset and per class. With
    ``save_masks`` the model's label maps are written in the DAVIS layout
    (``masks/<video>/<frame>.png``, the ground truth's names and size).
    """
    import pandas as pd
    from tqdm import tqdm

    from tcmn.diagnostics import format_statistics, mean_statistics
    from tcmn.evaluation import (
        CONTROLS,
        control_labels,
        copy_first_mask,
        given_masks,
        metric_args,
        numpy_item,
        predict_video,
        restrict_classes,
        video_diagnostics,
    )
    from tcmn.inference.session import InferenceSession
    from tcmn.io import write_label_maps
    from tcmn.metrics import VOSMetric, frame_scores

    check_settings(cfg, EVAL)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    session = InferenceSession.load(cfg.ckpt, cfg.get("propagation"), cfg.device)
    prop_cfg = session.settings.to_dict()
    eps = float(dict(session.hparams.get("loss") or {}).get("eps", 1e-3))
    dm = instantiate(
        cfg.data,
        _convert_="all",
        test_part=cfg.split,
        fold=cfg.get("fold"),
        num_workers=0,
        max_eval_videos=cfg.get("max_videos") or cfg.data.get("max_eval_videos"),
    )
    dm.prepare_data()
    dm.setup("test")
    vocab = dict(datasets=dm.dataset_names(), classes=dm.class_names(), videos=dm.video_names())
    methods = ["tcmn", "copy_first_mask"] + (
        [f"control_{c}" for c in CONTROLS] if cfg.controls else []
    )
    metrics = {m: VOSMetric(**vocab) for m in methods}
    frame_rows: list[dict] = []
    diag_rows: list[dict] = []
    overlay_dir = out_dir / "overlays"
    n_done = 0
    for item in tqdm(dm.test_dataloader(), desc=f"eval {cfg.split}", unit="video"):
        item = restrict_classes(numpy_item(item), cfg.get("classes"))
        if not item["given_frames"]:
            continue
        preds = {"tcmn": predict_video(session, item), "copy_first_mask": copy_first_mask(item)}
        diag_rows.append(video_diagnostics(session, item, eps))
        for c in CONTROLS if cfg.controls else ():
            wrong = given_masks(item, control_labels(item, c, cfg.seed))
            preds[f"control_{c}"] = predict_video(session, item, wrong)
        args = metric_args(item)
        for m, p in preds.items():
            metrics[m].update(p, **args)
        for m in ("tcmn", "copy_first_mask"):
            for oid, t0 in item["given_frames"].items():
                scored = item["annotated"].copy()
                scored[: t0 + 1] = False
                sc = frame_scores(preds[m], item["labels"], oid, scored)
                for j, fr in enumerate(sc["frames"]):
                    frame_rows.append(
                        dict(
                            method=m,
                            dataset=item["dataset"],
                            video=item["video"],
                            object=oid,
                            frame=int(fr),
                            J=sc["J"][j],
                            F=sc["F"][j],
                            Dice=sc["Dice"][j],
                        )
                    )
        if cfg.get("save_masks"):
            sub = (
                item["video"]
                if len(vocab["datasets"]) == 1
                else f"{item['dataset']}__{item['video']}"
            )
            write_label_maps(out_dir / "masks" / sub, item["stems"], preds["tcmn"])
        if n_done < cfg.n_overlays:
            write_overlay(
                overlay_dir / f"{item['dataset']}__{item['video']}.png",
                item,
                preds["tcmn"],
                cfg.overlay_frames,
            )
        n_done += 1
    if n_done == 0:
        raise TCMNError(
            f"no video with a given mask in split '{cfg.split}' of {vocab['datasets']}; check split= and classes=."
        )
    results = {m: metrics[m].compute() for m in methods}

    def long(table_name: str) -> pd.DataFrame:
        frames = []
        for m, r in results.items():
            t = getattr(r, table_name).copy()
            t.insert(0, "method", m)
            frames.append(t if table_name == "per_video" else t.reset_index())
        return pd.concat(frames, ignore_index=True)

    tables = {name: long(name) for name in ("per_video", "per_dataset", "per_class")}
    for name, t in tables.items():
        with atomic_write(out_dir / f"{name}.csv", "w") as f:
            t.to_csv(f, index=False)
    with atomic_write(out_dir / "per_frame.csv", "w") as f:
        pd.DataFrame(frame_rows).to_csv(f, index=False)
    summary = {
        "status": "ok",
        "ckpt": str(cfg.ckpt),
        "split": cfg.split,
        "fold": cfg.get("fold"),
        "seed": cfg.get("seed"),
        "classes": list(cfg.classes) if cfg.get("classes") else None,
        "n_videos": n_done,
        "propagation": prop_cfg,
        "weights": session.weights,
        "masks": str(out_dir / "masks") if cfg.get("save_masks") else None,
        "methods": {m: r.summary for m, r in results.items()},
        # eq. 1's distances of the memory values, value norm, mask signal (tcmn.diagnostics)
        "diagnostics": mean_statistics(diag_rows),
        "per_dataset": tables["per_dataset"].to_dict(orient="records"),
        "per_class": tables["per_class"].to_dict(orient="records"),
    }
    if cfg.controls:
        summary["mask_dependence"] = mask_dependence(results)
    write_summary(out_dir, summary)
    print(format_table(tables["per_dataset"], summary.get("mask_dependence")))
    print(format_statistics(summary["diagnostics"]))
    print(f"\ntables, overlays and summary.json written to {out_dir}")
    if cfg.get("wandb"):
        log_eval_to_wandb(cfg, summary, tables, overlay_dir)
    return summary


def mask_dependence(results: dict) -> dict[str, float]:
    """J(tcmn) - max over controls of J, for every dataset, class and the means."""
    model = results["tcmn"]
    controls = [r for m, r in results.items() if m.startswith("control_")]
    out = {}
    for table in ("per_dataset", "per_class"):
        mt = getattr(model, table)
        for name in mt.index:
            j = float(mt.loc[name, "J"])
            worst = max(float(getattr(c, table).loc[name, "J"]) for c in controls)
            prefix = "class/" if table == "per_class" else ""
            out[f"{prefix}{name}"] = j - worst
    return out


def format_table(per_dataset, dependence: dict | None = None) -> str:
    """The paper's Table 1 layout as text: rows = datasets (+ mean), columns = method x J/F/Dice."""
    t = per_dataset.pivot_table(
        index="dataset", columns="method", values=["J", "F", "Dice"], sort=False
    )
    t = t.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    text = (t * 100).round(2).to_string()
    if dependence:
        text += "\nmask dependence (J true mask - max J wrong masks): " + ", ".join(
            f"{k} {100 * v:.2f}" for k, v in dependence.items() if not k.startswith("class/")
        )
    return text


def write_overlay(path: Path, item: dict, pred, n_frames: int) -> None:
    """Write :func:`tcmn.viz.overlay_strip` of a video as a PNG (atomically)."""
    import cv2

    from tcmn.viz import overlay_strip

    img = overlay_strip(item, pred, n_frames)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    with atomic_write(path) as f:
        f.write(buf.tobytes())


def log_eval_to_wandb(cfg: DictConfig, summary: dict, tables: dict, overlay_dir: Path) -> None:
    """Log an evaluation (summary, mask dependence, tables, overlays) as a W&B run."""
    import wandb

    run = wandb.init(
        project="tcmn",
        job_type="eval",
        dir=str(cfg.paths.output_dir),
        config=OmegaConf.to_container(cfg, resolve=True),
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
    flat = {f"{m}/{k}": v for m, s in summary["methods"].items() for k, v in s.items()}
    flat.update(
        {f"mask_dependence/{k}": v for k, v in (summary.get("mask_dependence") or {}).items()}
    )
    run.summary.update(flat)
    for name, t in tables.items():
        run.log({name: wandb.Table(dataframe=t)})
    for p in sorted(overlay_dir.glob("*.png")):
        run.log({f"overlay/{p.stem}": wandb.Image(str(p))})
    run.finish()
