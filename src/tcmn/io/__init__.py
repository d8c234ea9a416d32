"""Reading and writing the files of medical videos: the lowest data layer, imported by ``data``
(the prepared layout, the converters) and ``inference`` (prediction, evaluation) alike.

- :mod:`tcmn.io.formats`: file kinds by extension, natural frame order, intensities to uint8;
- :mod:`tcmn.io.images`: one frame (uint8 RGB) and the PNG writer;
- :mod:`tcmn.io.volumes`: NIfTI and MetaImage sequences, with the NIfTI axis convention;
- :mod:`tcmn.io.video`: :func:`open_video`, one :class:`VideoSource` for a video file, a folder of
  frames, a NIfTI or a MetaImage sequence (the sources: :mod:`tcmn.io.source` for volumes and
  folders, :mod:`tcmn.io.capture` for video files);
- :mod:`tcmn.io.masks`: the one reader (:func:`load_mask`, :func:`read_label_map`) and validator
  (:func:`validate_label_map`) of label maps;
- :mod:`tcmn.io.prefetch`: decoding ahead in a thread (:func:`prefetch`, :class:`FrameReader`);
- :mod:`tcmn.io.writer`: :class:`PredictionWriter` (PNG label maps, overlay video, NIfTI, manifest)
  and :func:`write_label_maps` (one video's label maps in the DAVIS layout).
"""

from tcmn.io.formats import (
    IMAGE_EXTS,
    MASK_ARRAY_EXTS,
    MASK_IMAGE_EXTS,
    METAIMAGE_EXTS,
    NIFTI_EXTS,
    VIDEO_EXTS,
    to_uint8,
)
from tcmn.io.images import read_frame, write_png
from tcmn.io.masks import load_mask, read_label_map, validate_label_map
from tcmn.io.prefetch import FrameReader, prefetch
from tcmn.io.video import VideoSource, open_video
from tcmn.io.volumes import NiftiGeometry
from tcmn.io.writer import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    PredictionWriter,
    check_writable,
    write_label_maps,
)

__all__ = [
    "IMAGE_EXTS",
    "MASK_ARRAY_EXTS",
    "MASK_IMAGE_EXTS",
    "METAIMAGE_EXTS",
    "NIFTI_EXTS",
    "VIDEO_EXTS",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "FrameReader",
    "NiftiGeometry",
    "PredictionWriter",
    "VideoSource",
    "check_writable",
    "load_mask",
    "open_video",
    "prefetch",
    "read_frame",
    "read_label_map",
    "to_uint8",
    "validate_label_map",
    "write_label_maps",
    "write_png",
]
