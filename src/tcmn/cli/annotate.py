"""``tcmn-annotate``: the annotation app, served on this machine (see ``conf/annotate.yaml``).

::

    tcmn-annotate data_root=/data/videos ckpt=logs/.../checkpoints/last.ckpt
    # then open http://127.0.0.1:8765 in a browser

Binds 127.0.0.1 unless ``host=`` says otherwise; on any other address every request needs the
token printed at start (``token=`` sets one). Stop it with Ctrl-C: the work is saved as it goes.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tcmn.cli._common import setup_env, user_errors
from tcmn.errors import TCMNError
from tcmn.utils.paths import CONF_DIR

log = logging.getLogger("tcmn.annotate")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def app_config(cfg: DictConfig):
    """The :class:`~tcmn.app.server.AppConfig` of a composed ``annotate`` config (validated)."""
    from tcmn.app.server import AppConfig
    from tcmn.checks import ANNOTATE, check_settings
    from tcmn.inference.session import settle

    check_settings(cfg, ANNOTATE)
    overrides = OmegaConf.to_container(cfg.propagation, resolve=True)
    settle(None, overrides, str(cfg.device))  # bad settings fail before the server starts
    root = Path(str(cfg.data_root)).expanduser()
    if not root.is_dir():
        raise TCMNError(
            f"data_root={cfg.data_root}: no such folder; give the folder of your videos."
        )
    token = cfg.token
    if token is None and str(cfg.host) not in LOOPBACK:
        token = secrets.token_urlsafe(24)
    return AppConfig(
        data_root=root,
        sessions=Path(str(cfg.sessions)).expanduser() if cfg.sessions else None,
        runs=Path(str(cfg.runs)).expanduser() if cfg.runs else None,
        ckpt=str(cfg.ckpt) if cfg.ckpt else None,
        token=str(token) if token else None,
        upload_max_mb=float(cfg.upload_max_mb),
        device=str(cfg.device),
        propagation=overrides,
        net=OmegaConf.to_container(cfg.model.net, resolve=True),
    )


def annotate(cfg: DictConfig) -> None:
    import uvicorn

    from tcmn.app.server import create_app

    conf = app_config(cfg)
    port = int(cfg.port)
    app = create_app(conf)
    url = f"http://{cfg.host}:{port}/" + (f"?token={conf.token}" if conf.token else "")
    print(f"tcmn-annotate: open {url} (data root {conf.data_root}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=str(cfg.host), port=port, log_level="warning")


@hydra.main(config_path=CONF_DIR, config_name="annotate", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    user_errors(annotate)(cfg)


def main() -> None:
    """Entry point of ``tcmn-annotate``."""
    setup_env()
    _hydra_main()


if __name__ == "__main__":
    main()
