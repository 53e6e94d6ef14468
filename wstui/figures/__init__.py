"""Publication figures of a scan, a quantization study and a diff, drawn with matplotlib.

Pure drawing: every builder takes plain data (`TensorResult.data`, the `wstui.scan/1`,
`wstui.quant/1` and `wstui.diff/1` documents) and returns a matplotlib Figure; nothing here
runs an analyzer or imports a face. matplotlib (Agg backend) is imported only inside the
functions, so no cold path (`wstui ls`, the app's first paint) pays for it.

Two looks, one builder: `style="paper"` (black on white, for files) and `style="web"`, whose
colours are sentinels that `output.inline_svg` swaps for CSS variables, so one inline SVG
follows the page's light or dark theme.
"""
