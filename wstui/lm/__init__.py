"""Running the checkpoint as a language model: a transformers causal LM built from wstui's own
readers (never a download), its tokenizer and the calibration text.

Imported only by what needs a forward pass (`wstui sensitivity`, `Scope.sensitivity`): it pulls
in torch and transformers, which the cold paths (`wstui ls`, `--help`, the app's first paint)
must not pay for.
"""
