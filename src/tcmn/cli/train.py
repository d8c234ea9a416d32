"""``tcmn-train``: one training stage from the Hydra config tree (``conf/train.yaml``).

Examples::

    tcmn-train experiment=demo
    tcmn-train experiment=paper_pretrain
    tcmn-train experiment=paper_main init_from=logs/.../checkpoints/last.ckpt
    tcmn-train ... ckpt_path=logs/.../checkpoints/last.ckpt      # resume exactly
    tcmn-train -m experiment=cpu_small seed=0,1,2                 # a sweep

In a multirun (sweep), a job that crashes or whose loss becomes non-finite writes a
``summary.json`` with ``status: failed`` and returns ``failed_value`` to the sweeper instead of
stopping the sweep.
"""

from __future__ import annotations

import logging
import traceback

import hydra
from omegaconf import DictConfig

from tcmn.cli._common import setup_env, user_errors
from tcmn.utils.paths import CONF_DIR

log = logging.getLogger("tcmn.train")


def train(cfg: DictConfig) -> float:
    from tcmn.experiment import _finish_wandb, in_multirun, objective, run_train, write_summary

    try:
        summary = run_train(cfg)
    except Exception as e:
        if not in_multirun():
            raise
        log.error("job failed: %s\n%s", e, traceback.format_exc())
        write_summary(
            cfg.paths.output_dir,
            {"status": "failed", "error": str(e), "seed": cfg.seed, "fold": cfg.data.get("fold")},
        )
        _finish_wandb()
        return float(cfg.failed_value)
    return objective(summary, cfg.optimized_metric, cfg.failed_value)


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float:
    return user_errors(train)(cfg)


def main() -> None:
    setup_env()
    _hydra_main()


if __name__ == "__main__":
    main()
