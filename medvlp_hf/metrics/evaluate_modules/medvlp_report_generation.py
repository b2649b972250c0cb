"""Report-generation scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D as pycocoevalcap 1.2, MedViLL BLEU)
as an offline evaluate module; pass ``meteor=False`` to ``compute`` to skip the 10 s Java start.
"""
import datasets
import evaluate

from medvlp_hf.metrics.report_generation import compute_report_generation_metrics


class MedVLPReportGeneration(evaluate.Metric):
    """Corpus NLG scores of generated reports; references are one string or a list of strings each."""

    def _info(self):
        text = datasets.Value("string")
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: generated reports (str); references: str or list of str per report.",
            features=[
                datasets.Features({"predictions": text, "references": datasets.Sequence(text)}),
                datasets.Features({"predictions": text, "references": text}),
            ],
        )

    def _compute(self, predictions, references, meteor=True):
        return compute_report_generation_metrics(predictions, references, meteor=meteor)
