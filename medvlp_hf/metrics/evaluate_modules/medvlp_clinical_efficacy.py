"""Clinical efficacy (CheXpert-label precision / recall / F1 over 14 and 5 observations, MedViLL label
accuracy) as an offline evaluate module; ``compute`` takes ``labeler=`` (default: the rule-based CheXpert
labeler) and ``uncertain=`` ("positive" or "negative").
"""
import datasets
import evaluate

from medvlp_hf.metrics.clinical_efficacy import compute_clinical_efficacy


class MedVLPClinicalEfficacy(evaluate.Metric):
    """CE scores of generated reports against reference reports through a report labeler."""

    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: generated reports (str); references: reference reports (str).",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, labeler=None, uncertain="positive"):
        return compute_clinical_efficacy(predictions, references, labeler=labeler, uncertain=uncertain)
