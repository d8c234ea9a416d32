"""Thin command-line entry points (Hydra): tcmn-train, -eval, -predict, -prepare, -cv, -bench."""
