"""Dataset splits as a reviewed, versioned file: ``<root>/splits.json``.

One file per prepared dataset (like nnU-Net's ``splits_final.json``)::

    {"version": 1, "dataset": "<name>", "seed": 0, "test_fraction": 0.2, "n_folds": 5,
     "holdout_classes": ["LV", "LA"], "group_by": "patient",
     "train": [...videos], "test": [...videos],
     "folds": [{"train": [...], "val": [...]}, ...],
     "unseen": [...videos]}

Rules (all lists sorted):

* Videos are grouped by patient (``VideoMeta.patient``); a patient's videos always stay together,
  so no patient is in two parts (train/test, a fold's train/val, unseen vs the rest).
* ``unseen``: every video with an object of a ``holdout_classes`` class, together with every
  other video of its patient; these are left out of train, test and the folds (the paper's
  unseen-class test: CAMUS LV and LA).
* The 8:2 split: ``test`` gets ``round(test_fraction * n_groups)`` patient groups (halves round
  up), at least 1 and at most ``n_groups - 1`` when there are 2 or more groups and
  ``test_fraction > 0``; ``train`` gets the rest.
* ``folds``: k-fold cross-validation over *all* non-unseen patient groups (train and test
  together); each group is in exactly one fold's ``val``; folds are balanced by video count.
  ``k = min(n_folds, n_groups)`` (a warning says when it is capped; ``n_folds`` in the file is the
  number actually written) and there are no folds when ``k < 2``.
* Seeded and deterministic; an existing file is never overwritten unless ``overwrite=True``.

The paper has no separate validation set: :func:`select` therefore returns the test part for
``val`` when no fold is chosen.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from tcmn.data.layout import PreparedDataset, VideoMeta
from tcmn.errors import TCMNError
from tcmn.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

SPLITS_NAME = "splits.json"
SPLITS_VERSION = 1
PARTS = ("train", "val", "test", "unseen")
_KEYS = (
    "version",
    "dataset",
    "seed",
    "test_fraction",
    "n_folds",
    "holdout_classes",
    "group_by",
    "train",
    "test",
    "folds",
    "unseen",
)


def splits_path(root: str | os.PathLike) -> Path:
    """``<root>/splits.json``."""
    return Path(root) / SPLITS_NAME


def _groups(videos: Mapping[str, VideoMeta]) -> dict[str, list[str]]:
    """Patient id -> sorted video names (a video without a patient is its own group)."""
    groups: dict[str, list[str]] = {}
    for name, v in videos.items():
        groups.setdefault(v.patient or name, []).append(name)
    return {p: sorted(vs) for p, vs in sorted(groups.items())}


def build_splits(
    videos: Mapping[str, VideoMeta],
    dataset: str,
    test_fraction: float = 0.2,
    n_folds: int = 5,
    seed: int = 0,
    holdout_classes: Iterable[str] = (),
) -> dict:
    """Compute the splits of a set of videos (no file access; see the module docstring).

    Args:
        videos: video name -> :class:`VideoMeta` (``patient`` and ``objects`` are used).
        dataset: dataset name stored in the result.
        test_fraction: share of the non-unseen patient groups put in ``test``, in [0, 1).
        n_folds: requested number of cross-validation folds (>= 0; capped at the groups).
        seed: non-negative integer seed of the shuffles.
        holdout_classes: class names whose videos (and their patients) go to ``unseen``.
    Returns:
        the ``splits.json`` content as a dict.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TCMNError(f"seed={seed!r} is not a non-negative integer; pass e.g. seed=0.")
    try:
        test_fraction = float(test_fraction)
    except (TypeError, ValueError) as e:
        raise TCMNError(f"test_fraction={test_fraction!r} is not a number; pass e.g. 0.2.") from e
    if not 0.0 <= test_fraction < 1.0:
        raise TCMNError(f"test_fraction={test_fraction} is outside [0, 1); pass e.g. 0.2.")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 0:
        raise TCMNError(f"n_folds={n_folds!r} is not a non-negative integer; pass e.g. 5.")
    if isinstance(holdout_classes, str):
        holdout_classes = [holdout_classes]
    holdout = sorted({str(c) for c in holdout_classes})

    groups = _groups(videos)
    unseen_patients = {
        p
        for p, names in groups.items()
        if any(set(videos[n].objects.values()) & set(holdout) for n in names)
    }
    if holdout and not unseen_patients:
        log.warning("no video of %s has an object of class %s: 'unseen' is empty", dataset, holdout)
    seen = [p for p in groups if p not in unseen_patients]  # sorted
    rng = np.random.default_rng(int(seed))

    # the 8:2 split, by patient group
    n = len(seen)
    order = [seen[i] for i in rng.permutation(n)]
    n_test = int(np.floor(test_fraction * n + 0.5))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    elif n < 2:
        n_test = 0
    test_p, train_p = order[:n_test], order[n_test:]

    # k folds over every non-unseen group, balanced by video count
    k = min(int(n_folds), n)
    if n_folds and k < 2:
        log.warning("%s: fewer than 2 patient groups to cross-validate: no folds", dataset)
    elif k < n_folds:
        log.warning("%s: %d folds requested but only %d patient groups", dataset, n_folds, k)
    folds: list[dict] = []
    if k >= 2:
        rank = {p: i for i, p in enumerate(seen[i] for i in rng.permutation(n))}
        load = [0] * k
        members: list[list[str]] = [[] for _ in range(k)]
        for p in sorted(seen, key=lambda p: (-len(groups[p]), rank[p])):
            f = min(range(k), key=lambda i: (load[i], i))
            members[f].append(p)
            load[f] += len(groups[p])
        for f in range(k):
            val = sorted(v for p in members[f] for v in groups[p])
            train = sorted(v for p in seen if p not in members[f] for v in groups[p])
            folds.append({"train": train, "val": val})

    def videos_of(patients: Iterable[str]) -> list[str]:
        return sorted(v for p in patients for v in groups[p])

    return {
        "version": SPLITS_VERSION,
        "dataset": dataset,
        "seed": int(seed),
        "test_fraction": test_fraction,
        "n_folds": len(folds),
        "holdout_classes": holdout,
        "group_by": "patient",
        "train": videos_of(train_p),
        "test": videos_of(test_p),
        "folds": folds,
        "unseen": videos_of(sorted(unseen_patients)),
    }


def make_splits(
    root: str | os.PathLike,
    test_fraction: float = 0.2,
    n_folds: int = 5,
    seed: int = 0,
    holdout_classes: Iterable[str] = (),
    overwrite: bool = False,
) -> dict:
    """Compute the splits of the prepared dataset at ``root`` and write ``<root>/splits.json``.

    Args:
        root: a prepared dataset folder (read with :class:`PreparedDataset`).
        test_fraction, n_folds, seed, holdout_classes: see :func:`build_splits`.
        overwrite: replace an existing ``splits.json``; without it an existing file is an error.
    Returns:
        the written content as a dict.
    """
    path = splits_path(root)
    if path.exists() and not overwrite:
        raise TCMNError(
            f"{path}: a splits file already exists and is never replaced silently; pass "
            "overwrite=true to recompute it (or delete it)."
        )
    ds = PreparedDataset(root)
    splits = build_splits(ds.videos, ds.name, test_fraction, n_folds, seed, holdout_classes)
    atomic_write_text(path, json.dumps(splits, indent=1) + "\n")
    log.info(
        "wrote %s: %d train, %d test, %d unseen videos, %d folds",
        path,
        len(splits["train"]),
        len(splits["test"]),
        len(splits["unseen"]),
        len(splits["folds"]),
    )
    return splits


def _check_format(splits: object, where: Path) -> None:
    fix = f"re-create it with `tcmn-prepare splits root={where.parent} overwrite=true`"
    if not isinstance(splits, dict):
        raise TCMNError(f"{where}: the splits file is not a JSON object; {fix}.")
    missing = [k for k in _KEYS if k not in splits]
    if missing:
        raise TCMNError(f"{where}: the splits file lacks {missing}; {fix}.")
    if splits["version"] != SPLITS_VERSION:
        raise TCMNError(
            f"{where}: splits version {splits['version']!r} is not {SPLITS_VERSION}; {fix}."
        )

    def is_names(x: object) -> bool:
        return isinstance(x, list) and all(isinstance(v, str) for v in x)

    for part in ("train", "test", "unseen"):
        if not is_names(splits[part]):
            raise TCMNError(f"{where}: '{part}' is not a list of video names; {fix}.")
    if not isinstance(splits["folds"], list) or not all(
        isinstance(f, dict) and is_names(f.get("train")) and is_names(f.get("val"))
        for f in splits["folds"]
    ):
        raise TCMNError(f"{where}: 'folds' is not a list of {{train, val}} name lists; {fix}.")


def load_splits(root: str | os.PathLike, check: bool = True) -> dict:
    """Read ``<root>/splits.json``.

    Args:
        root: the prepared dataset folder.
        check: also validate it against the dataset with :func:`check_splits`.
    Returns:
        the splits dict (format in the module docstring).
    """
    path = splits_path(root)
    if not path.is_file():
        raise TCMNError(
            f"{path}: the splits file is missing; run `tcmn-prepare splits root={Path(root)}` "
            "to create it."
        )
    try:
        splits = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TCMNError(
            f"{path}: the splits file cannot be read ({e}); re-create it with "
            f"`tcmn-prepare splits root={Path(root)} overwrite=true`."
        ) from e
    _check_format(splits, path)
    if check:
        check_splits(root, splits)
    return splits


def check_splits(root: str | os.PathLike, splits: Mapping) -> None:
    """Validate ``splits`` against the prepared dataset at ``root``; raise a :class:`TCMNError`.

    Checks: the format, the dataset name, that every listed video exists, that no video or
    patient is in two of train/test/unseen or in a fold's train and val, that the folds'
    ``val`` parts partition train + test, and that no holdout-class video is outside
    ``unseen``. Videos of the dataset that the file does not list only cause a warning.
    """
    path = splits_path(root)
    fix = f"re-create it with `tcmn-prepare splits root={Path(root)} overwrite=true`"
    _check_format(splits, path)
    ds = PreparedDataset(root)
    if splits["dataset"] != ds.name:
        raise TCMNError(
            f"{path}: the splits are for dataset '{splits['dataset']}' but {Path(root)} holds "
            f"'{ds.name}'; {fix}."
        )
    listed = set(splits["train"]) | set(splits["test"]) | set(splits["unseen"])
    for f in splits["folds"]:
        listed |= set(f["train"]) | set(f["val"])
    unknown = sorted(listed - set(ds.videos))
    if unknown:
        raise TCMNError(
            f"{path}: video '{unknown[0]}' ({len(unknown)} unknown in all) is not in "
            f"{Path(root) / 'meta.json'}; {fix}."
        )

    def patients(names: Iterable[str]) -> set[str]:
        return {ds.videos[n].patient or n for n in names}

    pairs = [
        ("train", splits["train"], "test", splits["test"]),
        ("train", splits["train"], "unseen", splits["unseen"]),
        ("test", splits["test"], "unseen", splits["unseen"]),
    ]
    for i, f in enumerate(splits["folds"]):
        pairs.append((f"folds[{i}].train", f["train"], f"folds[{i}].val", f["val"]))
        pairs.append((f"folds[{i}].val", f["val"], "unseen", splits["unseen"]))
    for a_name, a, b_name, b in pairs:
        common = sorted(set(a) & set(b))
        if common:
            raise TCMNError(
                f"{path}: video '{common[0]}' is in both '{a_name}' and '{b_name}'; {fix}."
            )
        shared = sorted(patients(a) & patients(b))
        if shared:
            raise TCMNError(
                f"{path}: patient '{shared[0]}' has videos in both '{a_name}' and '{b_name}'; "
                f"{fix}."
            )
    holdout = set(splits["holdout_classes"])
    leaked = sorted(
        n for n in listed - set(splits["unseen"]) if set(ds.videos[n].objects.values()) & holdout
    )
    if leaked:
        raise TCMNError(
            f"{path}: video '{leaked[0]}' has a holdout class {sorted(holdout)} but is not in "
            f"'unseen'; {fix}."
        )
    if splits["folds"]:
        pool = set(splits["train"]) | set(splits["test"])
        vals = [set(f["val"]) for f in splits["folds"]]
        if set().union(*vals) != pool or sum(map(len, vals)) != len(pool):
            raise TCMNError(f"{path}: the folds' val parts do not partition train + test; {fix}.")
        for i, f in enumerate(splits["folds"]):
            if set(f["train"]) != pool - set(f["val"]):
                raise TCMNError(
                    f"{path}: folds[{i}].train is not train + test minus folds[{i}].val; {fix}."
                )
    missing = sorted(set(ds.videos) - listed)
    if missing:
        log.warning(
            "%s does not list %d video(s) of %s (e.g. '%s'); they are used by no part",
            path,
            len(missing),
            root,
            missing[0],
        )


def select(splits: Mapping, part: str, fold: int | None = None) -> list[str]:
    """The video names of ``part`` (one of ``train``, ``val``, ``test``, ``unseen``).

    With ``fold=None`` train and test come from the 8:2 split and ``val`` is the test part (the
    paper has no separate validation set). With ``fold=K``: train is ``folds[K].train`` and
    both val and test are ``folds[K].val``. ``unseen`` never depends on the fold.

    Returns:
        a new sorted list of video names.
    """
    if part not in PARTS:
        raise TCMNError(f"split part '{part}' is unknown; use one of {list(PARTS)}.")
    if part == "unseen":
        return sorted(splits["unseen"])
    if fold is None:
        return sorted(splits["train"] if part == "train" else splits["test"])
    folds = splits.get("folds") or []
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)):
        raise TCMNError(f"fold={fold!r} is not an integer; pass a fold number or null.")
    if not folds:
        raise TCMNError(
            f"fold {fold} was asked for but the splits file has no folds; re-create the splits "
            "with n_folds>=2 (and at least 2 patients) or pass fold=null."
        )
    if not 0 <= fold < len(folds):
        raise TCMNError(
            f"fold {fold} does not exist: the splits file has {len(folds)} folds "
            f"(0..{len(folds) - 1}); pass another fold or re-create the splits with more folds."
        )
    return sorted(folds[fold]["train"] if part == "train" else folds[fold]["val"])
