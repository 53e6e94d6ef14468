"""The shareable report of a checkpoint: one self-contained HTML file (`html.py`), the same
as Markdown with figure files (`markdown.py`), and each figure as its own file; what they
say is built once, as plain blocks, in `model.py`."""
