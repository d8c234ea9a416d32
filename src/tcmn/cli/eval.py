"""``tcmn-eval``: evaluate a checkpoint one-shot on a dataset part (``conf/eval.yaml``).

Writes ``per_video.csv``, ``per_dataset.csv`` (paper Table 1 layout), ``per_class.csv`` (Table 2
layout), ``per_frame.csv``, overlays and ``summary.json`` into the run folder and prints the table,
with the copy-first-mask baseline (and, with ``controls=true``, wrong-first-mask controls).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from tcmn.cli._common import setup_env, user_errors
from tcmn.utils.paths import CONF_DIR


def evaluate(cfg: DictConfig) -> dict:
    from tcmn.experiment import run_eval

    return run_eval(cfg)


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    user_errors(evaluate)(cfg)


def main() -> None:
    setup_env()
    _hydra_main()


if __name__ == "__main__":
    main()
