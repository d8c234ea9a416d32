"""``tcmn-prepare``: convert a source dataset, generate the synthetic one, or write splits.

Config: ``conf/prepare.yaml``. Three uses::

    tcmn-prepare dataset=NAME src=SOURCE dst=OUT [+options.KEY=VALUE ...]
    tcmn-prepare dataset=synthetic dst=OUT [n_videos=24 n_frames=20 size=[128,128] seed=0]
    tcmn-prepare splits root=PREPARED [test_fraction=0.2 n_folds=5 seed=0 holdout_classes=[LV,LA]
                                       overwrite=false]

A conversion (and the synthetic generator) then writes ``<dst>/splits.json`` with the splits
knobs of the config (by default seed 0, 8:2, 5 folds) unless that file exists already: splits
are never recomputed silently. Hydra parses only ``key=value`` arguments, so :func:`main` turns a
first argument ``splits`` into ``dataset=splits`` before Hydra reads ``sys.argv``. A user error
(unknown dataset, missing folder, bad option) prints one sentence and exits with status 2.
"""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tcmn.cli._common import setup_env, user_errors
from tcmn.errors import TCMNError
from tcmn.utils.paths import CONF_DIR

log = logging.getLogger("tcmn.prepare")

#: Datasets handled here rather than by a converter.
SYNTHETIC = "synthetic"
SPLITS = "splits"
SPLITS_FILE = "splits.json"


def known_datasets() -> list[str]:
    """Every value ``dataset=`` accepts: the converters, ``synthetic`` and ``splits``."""
    from tcmn.data.converters import CONVERTERS

    return [*sorted(CONVERTERS), SYNTHETIC, SPLITS]


def translate_argv(argv: list[str]) -> list[str]:
    """Return ``argv`` with a first argument ``splits`` replaced by ``dataset=splits``."""
    if len(argv) > 1 and argv[1] == SPLITS:
        return [argv[0], f"dataset={SPLITS}", *argv[2:]]
    return list(argv)


def _splits_kwargs(cfg: DictConfig) -> dict:
    return {
        "test_fraction": float(cfg.test_fraction),
        "n_folds": int(cfg.n_folds),
        "seed": int(cfg.seed),
        "holdout_classes": [str(c) for c in (cfg.holdout_classes or [])],
    }


def write_splits_if_missing(root: Path, cfg: DictConfig) -> None:
    """Write ``<root>/splits.json`` with the config's splits knobs unless it exists (logged)."""
    from tcmn.data.splits import make_splits

    path = root / SPLITS_FILE
    if path.exists():
        log.info(
            "kept the existing %s (splits are never recomputed silently; run "
            "`tcmn-prepare splits root=%s overwrite=true` to redo them)",
            path,
            root,
        )
        return
    kwargs = _splits_kwargs(cfg)
    log.info("%s is missing: writing the splits (%s)", path, _settings(kwargs))
    make_splits(root, overwrite=False, **kwargs)


def _settings(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


def _options(cfg: DictConfig, name: str, convert) -> dict:
    options = OmegaConf.to_container(cfg.options, resolve=True) if cfg.options else {}
    if not isinstance(options, dict):
        raise TCMNError(f"options={options!r}: must be a mapping of converter keyword options.")
    params = inspect.signature(convert).parameters
    allowed = [p for p in params if p not in ("src", "dst", "overwrite")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TCMNError(
            f"options.{unknown[0]}: not an option of the {name} converter; its options are "
            f"{', '.join(allowed) or 'none'}."
        )
    return options


def _path(value, key: str, dataset: str) -> Path:
    if value in (None, ""):
        raise TCMNError(f"{key}= is missing for dataset={dataset}; pass {key}=<folder>.")
    return Path(str(value)).expanduser()


def run(cfg: DictConfig) -> Path:
    """Do what the config asks (see the module docstring); returns the folder written."""
    choices = known_datasets()
    if OmegaConf.is_missing(cfg, "dataset"):
        raise TCMNError(f"dataset= is required; choose one of {', '.join(choices)}.")
    dataset = str(cfg.dataset)
    if dataset not in choices:
        raise TCMNError(f"dataset={dataset}: unknown dataset; choose one of {', '.join(choices)}.")

    if dataset == SPLITS:
        root = _path(cfg.root, "root", dataset)
        if not root.is_dir():
            raise TCMNError(
                f"{root}: the prepared dataset folder does not exist; fix root= or convert it "
                "first with `tcmn-prepare dataset=NAME src=... dst=...`."
            )
        from tcmn.data.splits import make_splits

        kwargs = _splits_kwargs(cfg)
        log.info("writing the splits of %s (%s)", root, _settings(kwargs))
        make_splits(root, overwrite=bool(cfg.overwrite), **kwargs)
        return root

    dst = _path(cfg.dst, "dst", dataset)
    if dataset == SYNTHETIC:
        from tcmn.data.synthetic import generate_synthetic

        size = list(cfg.size)
        if len(size) != 2:
            raise TCMNError(f"size={size}: give the frame size as [H, W].")
        out = Path(
            generate_synthetic(
                dst,
                n_videos=int(cfg.n_videos),
                n_frames=int(cfg.n_frames),
                size=(int(size[0]), int(size[1])),
                seed=int(cfg.seed),
                overwrite=bool(cfg.overwrite),
            )
        )
    else:
        from tcmn.data.converters import CONVERTERS

        convert = CONVERTERS[dataset]
        src = _path(cfg.src, "src", dataset)
        if not src.exists():
            raise TCMNError(
                f"{src}: the source of dataset '{dataset}' does not exist; fix src= to point at "
                "the downloaded dataset."
            )
        options = _options(cfg, dataset, convert)
        out = Path(convert(src, dst, overwrite=bool(cfg.overwrite), **options))
    write_splits_if_missing(out, cfg)
    return out


@hydra.main(config_path=CONF_DIR, config_name="prepare", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    user_errors(run)(cfg)


def main() -> None:
    """Entry point of ``tcmn-prepare`` (translates a leading ``splits``, then runs Hydra)."""
    setup_env()
    sys.argv = translate_argv(sys.argv)
    _hydra_main()


if __name__ == "__main__":
    main()
