"""Read W&B runs logged offline (``WANDB_MODE=offline``) without uploading them.

wandb 0.31 writes an offline run as one ``run-<id>.wandb`` file (no ``files/config.yaml`` or
``wandb-summary.json``): a LevelDB-style log of protobuf records (7-byte file header, 32 KiB
blocks, 7-byte record headers). :func:`read_offline_run` decodes the config, the history rows,
the summary and the exit code with the protobuf classes wandb ships. Used by the results notebook
and the tests; ``wandb sync <run folder>`` uploads the same runs to the W&B server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BLOCK = 32768


def _chunks(data: bytes) -> list[bytes]:
    pos, chunks, buf = 7, [], b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer too small for a header: skip to the next block
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full record
            chunks.append(chunk)
        elif kind == 2:  # first fragment
            buf = chunk
        elif kind in (3, 4):  # middle / last fragment
            buf += chunk
            if kind == 4:
                chunks.append(buf)
    return chunks


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """Config, history rows, summary, run record and exit code of one offline run folder.

    Returns ``{"config": dict, "history": [dict per logged step], "summary": dict, "run": the
    run record (protobuf) or None, "exit": exit code or None}``.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no run-*.wandb file (not an offline W&B run folder)")
    data = files[0].read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{files[0]}: not a W&B run file")

    def items(updates) -> dict:
        return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in updates}

    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "run": None, "exit": None}
    for c in _chunks(data):
        r = pb.Record.FromString(c)
        kind = r.WhichOneof("record_type")
        if kind == "config":
            out["config"].update(items(r.config.update))
        elif kind == "history":
            out["history"].append(items(r.history.item))
        elif kind == "summary":
            out["summary"].update(items(r.summary.update))
        elif kind == "run":
            out["run"] = r.run
        elif kind == "exit":
            out["exit"] = r.exit.exit_code
    return out


def find_offline_runs(root: str | Path) -> list[Path]:
    """Every offline run folder (``offline-run-*``) under ``root``, sorted by name (= time)."""
    return sorted(p for p in Path(root).rglob("offline-run-*") if p.is_dir())
