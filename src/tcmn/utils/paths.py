"""Where the project's files live."""

from __future__ import annotations

import os
from pathlib import Path

#: The Hydra config tree (``conf/`` at the repository root; override with $TCMN_CONF_DIR).
CONF_DIR = str(Path(os.environ.get("TCMN_CONF_DIR", Path(__file__).resolve().parents[3] / "conf")))
