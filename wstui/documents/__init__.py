"""The documents wstui writes (`wstui.<name>/1` dicts and their CSV rows): built from results,
read by every face; no textual, no rich."""
