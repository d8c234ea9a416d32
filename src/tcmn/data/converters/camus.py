"""CAMUS echocardiography (2CH / 4CH half-cycle sequences) -> prepared videos.

Accepted source layout: patient folders ``patientXXXX/`` anywhere under ``<src>`` (so both
``<src>/patient0001`` and ``<src>/CAMUS_public/database_nifti/patient0001`` work), holding per view
``V`` in {2CH, 4CH} either

- dense (the 2023 NIfTI release): ``patientXXXX_V_half_sequence.nii.gz`` and
  ``patientXXXX_V_half_sequence_gt.nii.gz``, a label map on every frame; or
- sparse (the older MetaImage release): ``patientXXXX_V_sequence.mhd`` (+ ``.raw``) with
  ``patientXXXX_V_ED_gt.mhd`` on the first frame and ``patientXXXX_V_ES_gt.mhd`` on the last.

Any of ``.nii.gz``, ``.nii`` and ``.mhd`` is accepted for each file; dense is used when both exist.
Labels: 1 = ``LV`` (left-ventricle cavity), 2 = ``MYO`` (myocardium), 3 = ``LA`` (left atrium);
``objects`` declares the labels that occur. 2CH and 4CH become separate videos
``patientXXXX_2CH`` / ``patientXXXX_4CH`` with ``patient = "patientXXXX"``.

Axis handling (the same function reads image and ground truth): the voxel array is taken as
stored, without applying the header's orientation. SimpleITK gives ``(T, H, W)``; nibabel gives
the reverse order ``(W, H, T)``, which is transposed to ``(T, H, W)``. For the CAMUS files this
shows frames upright, the probe (the apex) at the top, as in the usual CAMUS display.
``spacing`` is the in-plane pixel spacing from the image header in mm as ``[row, column]``
(= ``[sy, sx]``). Intensities that already lie in 0..255 are kept; others are min-max scaled over
the whole sequence to uint8.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from tcmn.data.converters._common import Conversion, LazyMasks, log, progress, require_dir
from tcmn.errors import TCMNError
from tcmn.io import to_uint8

NAME = "camus"
CLASSES = {1: "LV", 2: "MYO", 3: "LA"}
VIEWS = ("2CH", "4CH")
VOLUME_EXTS = (".nii.gz", ".nii", ".mhd")
EXPECTED = (
    "patientXXXX/patientXXXX_{2CH,4CH}_half_sequence[_gt].nii.gz, or "
    "patientXXXX_{2CH,4CH}_sequence.mhd with _ED_gt.mhd / _ES_gt.mhd"
)
_PATIENT = re.compile(r"patient\d+", re.IGNORECASE)


def read_volume(path: Path) -> tuple[np.ndarray, list[float] | None]:
    """Read a NIfTI or MetaImage 2-D (+time) volume.

    Returns:
        ``(array [T, H, W] in the file's dtype, spacing [row, col] in mm or None)``; a 2-D
        image gives ``T = 1``. NIfTI (nibabel, ``(W, H, T)`` on disk order) is transposed to
        ``(T, H, W)``, which is SimpleITK's order for MetaImage, so both formats agree.
    """
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj).T
            zooms = [float(z) for z in img.header.get_zooms()]
        elif name.endswith(".mhd"):
            import SimpleITK as sitk

            img = sitk.ReadImage(str(path))
            arr = sitk.GetArrayFromImage(img)
            zooms = [float(z) for z in img.GetSpacing()]
        else:
            raise TCMNError(f"{path}: unsupported volume format; use .nii.gz, .nii or .mhd.")
    except TCMNError:
        raise
    except Exception as e:  # nibabel / SimpleITK raise many types for unreadable files
        raise TCMNError(f"{path}: the volume cannot be read ({e}); check or re-download it.") from e
    arr = np.asarray(arr)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise TCMNError(
            f"{path}: expected a 2-D image or a 2-D + time sequence, got shape {arr.shape}; "
            "pass one view per file."
        )
    spacing = [zooms[1], zooms[0]] if len(zooms) >= 2 and zooms[0] > 0 and zooms[1] > 0 else None
    return arr, spacing


def to_labels(gt: np.ndarray, path: Path) -> np.ndarray:
    """Ground truth to a uint8 label map; values outside {0, 1, 2, 3} are an error."""
    vals = np.unique(gt)
    bad = [v for v in vals.tolist() if v not in (0, 1, 2, 3)]
    if bad:
        raise TCMNError(
            f"{path}: label value(s) {bad[:5]} are not CAMUS labels (0 background, 1 LV, 2 MYO, "
            "3 LA); check that this is a _gt file."
        )
    return gt.astype(np.uint8)


def _first(folder: Path, stem: str) -> Path | None:
    for ext in VOLUME_EXTS:
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def find_patients(src: Path) -> list[Path]:
    """Patient folders (``patientXXXX``) under ``src``, at any depth, sorted by name."""
    found: dict[str, Path] = {}
    candidates = [src] if _PATIENT.fullmatch(src.name) else []
    candidates += [p for p in src.rglob("patient*") if p.is_dir() and _PATIENT.fullmatch(p.name)]
    for p in candidates:
        if p.name in found and found[p.name] != p:
            raise TCMNError(
                f"{p}: patient '{p.name}' is also in {found[p.name]}; keep one copy under src."
            )
        found[p.name] = p
    return [found[k] for k in sorted(found)]


def _read_cfg(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def convert(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    overwrite: bool = True,
    views: list[str] | tuple[str, ...] = VIEWS,
) -> Path:
    """Convert CAMUS at ``src`` into the prepared layout at ``dst``.

    Args:
        src: dataset folder holding ``patientXXXX`` folders (see the module docstring).
        dst: output folder.
        overwrite: replace videos already in ``dst``; when False they are kept and skipped.
        views: which views to convert (``2CH``, ``4CH``).
    Returns:
        ``dst``. Frames ``[H, W, 3]`` uint8 (grey repeated), label maps uint8 in {0, 1, 2, 3};
        ``extra`` holds ``view``, ``ED`` / ``ES`` frame indices (0-based: first and last
        frame), ``annotation`` (``dense`` or ``sparse``) and the image quality when the
        ``Info_V.cfg`` file gives it.
    """
    src = require_dir(src, NAME)
    bad_views = [v for v in views if v not in VIEWS]
    if bad_views:
        raise TCMNError(f"views={list(views)}: unknown view(s) {bad_views}; use 2CH and/or 4CH.")
    jobs = [(p, v) for p in find_patients(src) for v in views]
    conv = Conversion(dst, NAME, overwrite)
    for pdir, view in progress(jobs, NAME):
        pid = pdir.name
        name = f"{pid}_{view}"
        base = f"{pid}_{view}"
        image_path = _first(pdir, f"{base}_half_sequence")
        dense_gt = _first(pdir, f"{base}_half_sequence_gt")
        ed_gt = es_gt = None
        if image_path is None or dense_gt is None:
            image_path = _first(pdir, f"{base}_sequence") or image_path
            ed_gt, es_gt = _first(pdir, f"{base}_ED_gt"), _first(pdir, f"{base}_ES_gt")
            dense_gt = None
        if image_path is None:
            conv.skip(name, f"no {base}_half_sequence or {base}_sequence file in {pdir}")
            continue
        if dense_gt is None and (ed_gt is None or es_gt is None):
            conv.skip(name, f"{image_path.name} has no ground truth (_half_sequence_gt or ED/ES)")
            continue
        if not conv.wants(name):
            continue
        volume, spacing = read_volume(image_path)
        t = volume.shape[0]
        if dense_gt is not None:
            gt, _ = read_volume(dense_gt)
            if gt.shape != volume.shape:
                raise TCMNError(
                    f"{dense_gt}: the ground truth is {gt.shape} (T, H, W) but the sequence is "
                    f"{volume.shape}; pair each sequence with its own _gt file."
                )
            labels = {i: to_labels(gt[i], dense_gt) for i in range(t)}
            annotation = "dense"
        else:
            labels = {}
            for idx, p in ((0, ed_gt), (t - 1, es_gt)):
                g, _ = read_volume(p)
                if g.shape != (1, *volume.shape[1:]):
                    raise TCMNError(
                        f"{p}: the ground truth is {g.shape[1:]} (H, W, {g.shape[0]} frame(s)) "
                        f"but the sequence frames are {volume.shape[1:]}; pair it with its own "
                        "sequence."
                    )
                labels[idx] = to_labels(g[0], p)
            annotation = "sparse"
        present = sorted(set().union(*(set(np.unique(m).tolist()) for m in labels.values())) - {0})
        if not present:
            log.warning("%s: every ground-truth frame is empty", dense_gt or es_gt)
        frames = to_uint8(volume)
        cfg = _read_cfg(pdir / f"Info_{view}.cfg")
        extra = {"view": view, "ED": 0, "ES": t - 1, "annotation": annotation}
        if "ImageQuality" in cfg:
            extra["quality"] = cfg["ImageQuality"]
        conv.add(
            name,
            frames=(frames[i] for i in range(t)),
            masks=LazyMasks(labels, labels.__getitem__),
            objects={k: CLASSES[k] for k in present} or dict(CLASSES),
            patient=pid,
            spacing=spacing,
            extra=extra,
        )
    return conv.finish(src, EXPECTED)
