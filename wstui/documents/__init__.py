"""The documents wstui writes, built from the engine's reports: `scan.py` (`wstui.scan/1`),
`diff.py` (`wstui.diff/1`), `quant.py` (`wstui.quant/1`), `sensitivity.py`
(`wstui.sensitivity/1`), each with its CSV rows. Strict JSON through `wstui.jsonio`, every CSV
through `wstui.outfile.write_csv`. Imports no face (app, commands, api), textual or rich, and
never the engine: a report is read through its attributes.
"""
