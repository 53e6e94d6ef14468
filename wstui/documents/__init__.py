"""Documents: the JSON each face writes, built from results (no textual, no rich)."""
