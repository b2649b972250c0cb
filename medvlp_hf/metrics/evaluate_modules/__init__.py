"""``evaluate.Metric`` modules of the package, one file per metric family, loadable offline with
``evaluate.load(<path of the file>)`` (``medvlp_hf.metrics.load(name)`` does that)."""
