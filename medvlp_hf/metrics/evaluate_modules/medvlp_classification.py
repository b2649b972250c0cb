"""Multi-label classification scores (AUROC micro/macro, F1 micro/macro at a threshold, per-class
table) as an offline evaluate module; ``compute`` takes ``threshold=`` and ``class_names=``.
"""
import datasets
import evaluate

from medvlp_hf.metrics.classification import classification_metrics


class MedVLPClassification(evaluate.Metric):
    """sklearn-equal AUROC and F1 for (samples, classes) scores and multi-hot labels."""

    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: per-class scores (list of float); references: multi-hot labels (list of int).",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, threshold=0.5, class_names=None):
        return classification_metrics(predictions, references, threshold=threshold, class_names=class_names)
