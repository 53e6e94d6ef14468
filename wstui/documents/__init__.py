"""The documents wstui writes (`wstui.<name>/1` dicts): built from results, read by every face."""
