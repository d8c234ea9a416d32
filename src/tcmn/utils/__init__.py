"""Small shared helpers: atomic file output and seeding."""

from tcmn.utils.atomic import atomic_dir, atomic_write, atomic_write_bytes, atomic_write_text
from tcmn.utils.seed import seed_everything, seed_worker

__all__ = [
    "atomic_dir",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "seed_everything",
    "seed_worker",
]
