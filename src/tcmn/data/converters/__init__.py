"""Dataset converters: one module per source dataset, each writing the prepared layout.

Every converter is ``convert(src, dst, overwrite=True, **options) -> Path``: it reads the source
dataset at ``src``, writes ``dst/JPEGImages``, ``dst/Annotations`` and ``dst/meta.json`` through
:class:`tcmn.data.layout.LayoutWriter` (a video is listed only once complete; output bytes depend
only on the inputs) and shows a progress bar over videos. :data:`CONVERTERS` maps the names used
by ``tcmn-prepare dataset=NAME`` to them. Heavy readers (nibabel, SimpleITK, scipy.io, h5py, the
video decoder) are imported only when a converter runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tcmn.data.converters import asu_mayo, camus, cvc_clinicdb, echonet, generic, hmc_qu

#: dataset name -> ``convert(src, dst, overwrite=True, **options) -> Path``.
CONVERTERS: dict[str, Callable[..., Path]] = {
    "cvc_clinicdb": cvc_clinicdb.convert,
    "asu_mayo": asu_mayo.convert,
    "hmc_qu": hmc_qu.convert,
    "camus": camus.convert,
    "echonet": echonet.convert,
    "generic": generic.convert,
}

__all__ = ["CONVERTERS"]
