"""``TCMNModule``: the LightningModule for both training stages and for validation.

Training step (both stages; the paper's section 2 and Fig. 1): a clip of T frames (3 in the
paper); frame 1 and its ground-truth masks go into memory, frame 2 is segmented from memory {1},
its *predicted* soft masks are encoded as its value, frame 3 is segmented from memory {1, 2}, and
frame 3's value is encoded too, for ``L_tc`` on (v1, v2, v3). Bootstrapped CE is applied to frames 2..T.

The predicted masks are kept in the graph by default (``detach_pred_masks: false``, as in STCN):
frame 3's loss then also trains how frame 2 was segmented and encoded, and ``L_tc``'s gradient
reaches the decoder through v2 and v3. ``detach_pred_masks: true`` cuts that path (cheaper
backward, each frame trained only by its own loss).

Validation / test: every video is propagated with the same code as inference
(:class:`tcmn.inference.propagator.Propagator`, every 5th frame into memory) and scored with
:class:`tcmn.metrics.VOSMetric`; ``val/J&F`` is the monitored metric. The copy-first-mask baseline
is scored beside it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from tcmn.callbacks import checkpoint_paths
from tcmn.diagnostics import (
    collapse_message,
    is_collapsed,
    mask_signal,
    trained_collapse_message,
    value_statistics,
)
from tcmn.errors import TCMNError
from tcmn.evaluation import copy_first_mask, metric_args, numpy_item, predict_video
from tcmn.inference.propagator import PropagatorConfig
from tcmn.inference.session import InferenceSession
from tcmn.losses import TCMNLoss
from tcmn.metrics import VOSMetric
from tcmn.models.backbones import freeze_batchnorm
from tcmn.models.network import TCMN
from tcmn.utils.torchfile import read_torch_file

log = logging.getLogger(__name__)


def _plain(x: Any) -> Any:
    """DictConfig / ListConfig / tuples -> plain dicts and lists (safe to store in checkpoints)."""
    if OmegaConf.is_config(x):
        return OmegaConf.to_container(x, resolve=True)
    if isinstance(x, Mapping):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


class NonFiniteLossError(TCMNError):
    """The training loss became NaN or infinite."""


class TCMNModule(pl.LightningModule):
    """Training and validation of a :class:`TCMN`.

    Args:
        net: keyword arguments of :class:`TCMN` (plain dict; stored in the checkpoint).
        loss: keyword arguments of :class:`TCMNLoss` (alpha, beta, eps, start_warm, end_warm,
            top_p, and the ``L_tc`` variants tc_on, tc_detach_query, tc_detach_masks,
            beta_pretrain, beta_warmup, head_dim).
        optimizer: ``{name: adam|adamw, lr, weight_decay, betas}``.
        scheduler: ``None`` or ``{name: multistep, milestones, gamma}`` /
            ``{name: cosine, t_max, eta_min}`` / ``{name: poly, power, total_steps}`` (per step).
        stage: ``pretrain`` or ``main`` (same step; logged, stored).
        detach_pred_masks: detach frame t's predicted masks before encoding its value.
        freeze_bn: BatchNorm layers of the encoders stay in eval mode (frozen statistics).
        propagation: :class:`PropagatorConfig` fields used by validation / test.
        channels_last: run the network channels-last.
        init_from: checkpoint of a previous stage whose network weights start this run.
        diag_every: log the value diagnostics (:mod:`tcmn.diagnostics`) every this many training
            steps (0: never).
    """

    def __init__(
        self,
        net: Mapping | None = None,
        loss: Mapping | None = None,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
        stage: str = "main",
        detach_pred_masks: bool = False,
        freeze_bn: bool = True,
        propagation: Mapping | None = None,
        channels_last: bool = False,
        init_from: str | None = None,
        diag_every: int = 25,
    ):
        super().__init__()
        net, loss, optimizer = _plain(net or {}), _plain(loss or {}), _plain(optimizer or {})
        scheduler, propagation = _plain(scheduler), _plain(propagation or {})
        if stage not in ("pretrain", "main"):
            raise TCMNError(f"stage='{stage}' is not known; use stage=pretrain or stage=main.")
        self.save_hyperparameters(
            dict(
                net=net,
                loss=loss,
                optimizer=optimizer,
                scheduler=scheduler,
                stage=stage,
                detach_pred_masks=detach_pred_masks,
                freeze_bn=freeze_bn,
                propagation=propagation,
                channels_last=channels_last,
                init_from=init_from,
                diag_every=diag_every,
            )
        )
        self.net = TCMN(**net)
        if channels_last:
            self.net.to_channels_last(True)
        self.criterion = TCMNLoss(**{"value_dim": self.net.value_dim, **loss, "stage": stage})
        self._collapse_warned: set[str] = set()
        self.propagation = PropagatorConfig.from_dict(propagation).check()
        if init_from:
            self.load_network_weights(init_from)
        self._t_batch: float | None = None
        self.val_metric: VOSMetric | None = None
        self.val_baseline: VOSMetric | None = None

    # ----------------------------------------------------------------- weights
    def load_network_weights(self, path: str) -> None:
        """Load the network weights of a checkpoint (of either stage) into ``self.net``."""
        p = Path(path)
        ckpt = read_torch_file(p, "init_from", "pass the .ckpt of the previous stage")
        if not isinstance(ckpt, dict):
            raise TCMNError(
                f"init_from={p}: holds no network weights; pass the .ckpt of the previous stage."
            )
        state = ckpt.get("state_dict", ckpt)
        net_state = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")} or state
        missing, unexpected = self.net.load_state_dict(net_state, strict=False)
        if missing or unexpected:
            raise TCMNError(
                f"{p}: its network does not match this model ({len(missing)} missing, "
                f"{len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[0]}); "
                "use the same model config as the run that wrote it."
            )
        log.info("network weights loaded from %s", p)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.hparams.freeze_bn:
            freeze_batchnorm(self.net)
        return self

    def on_train_start(self) -> None:
        # Lightning 2.x never calls .train() when fitting starts: a fresh module is in training
        # mode everywhere, so BatchNorm would update its statistics unless frozen here
        if self.hparams.freeze_bn:
            freeze_batchnorm(self.net)

    # ----------------------------------------------------------------- training
    def forward(self, batch: Mapping) -> tuple[Any, Any]:
        out = self.net(
            batch["frames"],
            batch["masks"][:, 0],
            batch["valid"],
            detach_masks=self.hparams.detach_pred_masks,
            last_value=True,
            tc_detach_query=self.criterion.tc_detach_query,
            tc_detach_masks=self.criterion.tc_detach_masks,
        )
        values = out.tc_values if out.tc_values is not None else out.values
        res = self.criterion(
            out.logits, batch["labels"][:, 1:], values, batch["valid"], self.global_step
        )
        return out, res

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._t_batch = time.perf_counter()

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        out, res = self(batch)
        if not torch.isfinite(res.loss):
            ckpt = checkpoint_paths(self.trainer)[1] or "none yet"
            bad = [
                n
                for n, v in (("L_bce", res.loss_bce), ("L_tc", res.loss_tc))
                if not torch.isfinite(v)
            ]
            raise NonFiniteLossError(
                f"the training loss became {res.loss.item()} at step {self.global_step} "
                f"({' and '.join(bad) or 'the weighted sum'} not finite: "
                f"L_bce={res.loss_bce.item():.4g}, L_tc={res.loss_tc.item():.4g}); the run stopped "
                f"before the update, the last good checkpoint is {ckpt}: lower model.optimizer.lr, "
                "set trainer.gradient_clip_val, or use trainer.precision=32-true."
            )
        b = batch["frames"].shape[0]
        self.log("train/loss", res.loss, prog_bar=True, batch_size=b)
        self.log("train/loss_bce", res.loss_bce, batch_size=b)
        self.log("train/loss_tc", res.loss_tc, batch_size=b)
        self.log("train/p", res.p, batch_size=b)
        self.log("train/beta", res.beta, batch_size=b)
        every = self.hparams.get("diag_every", 0)
        if every and self.global_step % every == 0:
            self.log_diagnostics(batch, out.values, float(res.loss_tc))
        return res.loss

    def log_diagnostics(
        self, batch: Mapping, values: torch.Tensor, loss_tc: float | None = None
    ) -> dict:
        """Log eq. 1's distances, the value norm and the mask signal of this batch under
        ``diag/`` (:mod:`tcmn.diagnostics`); warn once when the values have collapsed.

        ``loss_tc`` (the trained ``L_tc``, whatever ``tc_on`` compares) gives
        ``tc_term_trained``, its mean term; below the floor too, ``L_tc`` is satisfied by a
        collapse of what it compares (e.g. a constant projection head) and is warned once.
        """
        stats = value_statistics(values.detach(), batch["valid"], self.criterion.eps)
        stats["mask_signal"] = mask_signal(
            self.net, batch["frames"][:, 0], batch["masks"][:, 0], batch["valid"]
        )
        inner = values.shape[1] - 2
        stats["tc_term_trained"] = (
            loss_tc / inner if loss_tc is not None and inner > 0 else math.nan
        )
        metrics = {
            f"diag/{k}": float(stats[k])
            for k in (
                "d12",
                "d23",
                "d13",
                "value_norm",
                "tc_term",
                "tc_term_trained",
                "mask_signal",
            )
            if _finite(stats[k])
        }
        metrics["diag/collapsed"] = float(stats["collapsed"])
        # straight to the loggers: self.log would drop steps off trainer.log_every_n_steps
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
        if stats["collapsed"] and "values" not in self._collapse_warned:
            self._collapse_warned.add("values")
            log.warning(collapse_message(stats, self.global_step, self.criterion.eps))
        tc_on, term = self.criterion.tc_on, stats["tc_term_trained"]
        if tc_on != "values" and is_collapsed(term) and "trained" not in self._collapse_warned:
            self._collapse_warned.add("trained")
            log.warning(trained_collapse_message(term, tc_on, self.global_step))
        return stats

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._t_batch is not None:
            dt = time.perf_counter() - self._t_batch
            self.log("train/clips_per_s", batch["frames"].shape[0] / max(dt, 1e-9), batch_size=1)

    def configure_optimizers(self):
        cfg = dict(self.hparams.optimizer)
        name = cfg.pop("name", "adam").lower()
        kwargs = dict(lr=cfg.pop("lr", 1e-5), weight_decay=cfg.pop("weight_decay", 0.0))
        if "betas" in cfg:
            kwargs["betas"] = tuple(cfg.pop("betas"))
        if cfg:
            raise TCMNError(
                f"unknown optimizer settings {sorted(cfg)}; known: name, lr, weight_decay, betas."
            )
        opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(name)
        if opt_cls is None:
            raise TCMNError(f"optimizer '{name}' is not known; use adam or adamw.")
        params = [p for p in self.parameters() if p.requires_grad]
        opt = opt_cls(params, **kwargs)
        sched = self._scheduler(opt)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _scheduler(self, opt):
        cfg = dict(self.hparams.scheduler or {})
        name = str(cfg.pop("name", "none")).lower()
        if name in ("none", "null", ""):
            return None
        if name == "multistep":
            return torch.optim.lr_scheduler.MultiStepLR(
                opt, cfg["milestones"], cfg.get("gamma", 0.1)
            )
        if name == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                opt, cfg["t_max"], cfg.get("eta_min", 0.0)
            )
        if name == "poly":
            total, power = cfg["total_steps"], cfg.get("power", 0.9)
            return torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: max(0.0, 1 - s / total) ** power
            )
        raise TCMNError(f"scheduler '{name}' is not known; use none, multistep, cosine or poly.")

    # ----------------------------------------------------------------- validation / test
    def _make_metrics(self) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or not hasattr(dm, "video_names"):
            raise TCMNError(
                "validation needs the VOSDataModule (it names the datasets, classes and videos)."
            )
        kw = dict(datasets=dm.dataset_names(), classes=dm.class_names(), videos=dm.video_names())
        self.val_metric = VOSMetric(**kw).to(self.device)
        self.val_baseline = VOSMetric(**kw).to(self.device)

    def inference_session(self) -> InferenceSession:
        """An inference session over this module's network with the configured propagation."""
        return InferenceSession.from_network(
            self.net,
            self.propagation,
            {"channels_last": False},
            device=str(self.device),
            weights="training",
        )

    def on_validation_epoch_start(self) -> None:
        if self.val_metric is None:
            self._make_metrics()
        self.val_metric.reset()
        self.val_baseline.reset()

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, item: Mapping, batch_idx: int) -> dict[str, Any]:
        """Propagate one whole video and score it (model and copy-first-mask baseline).

        Returns ``{"pred": uint8 [T, H, W]}`` (the predicted label map at the label resolution),
        which callbacks receive as ``outputs`` (:class:`tcmn.callbacks.WandbMedia` draws overlays).
        """
        item = numpy_item(item)
        pred = predict_video(self.inference_session(), item)
        base = copy_first_mask(item)
        args = metric_args(item)
        self.val_metric.update(pred, **args)
        self.val_baseline.update(base, **args)
        return {"pred": pred}

    test_step = validation_step

    def _log_results(self, prefix: str) -> None:
        res = self.val_metric.compute()
        base = self.val_baseline.compute()
        logs = {f"{prefix}/{k}": float(v) for k, v in res.summary.items() if _finite(v)}
        logs.update(
            {
                f"{prefix}/baseline_{k}": float(v)
                for k, v in base.summary.items()
                if "/" not in k and _finite(v)
            }
        )
        if logs:
            self.log_dict(logs, sync_dist=False, batch_size=1)
        self.last_results = {"model": res, "baseline": base}

    def on_validation_epoch_end(self) -> None:
        self._log_results("val")

    def on_test_epoch_end(self) -> None:
        self._log_results("test")


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def load_module(path: str | Path, map_location: str = "cpu") -> TCMNModule:
    """Rebuild a :class:`TCMNModule` from a checkpoint without downloading backbone weights."""
    p = Path(path)
    if not p.is_file():
        raise TCMNError(
            f"{p}: checkpoint not found; pass ckpt=PATH to a .ckpt written by tcmn-train."
        )
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:
        raise TCMNError(
            f"{p}: cannot be read as a checkpoint ({type(e).__name__}); it may be truncated, re-train or pick another file."
        ) from e
    hp = dict(ckpt.get("hyper_parameters", {}))
    if "net" not in hp:
        raise TCMNError(
            f"{p}: not a TCMN checkpoint (no network settings inside); pass a .ckpt from tcmn-train."
        )
    hp["net"] = {**hp["net"], "pretrained": None, "query_weights": None, "value_weights": None}
    hp["init_from"] = None
    module = TCMNModule(**hp)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()
