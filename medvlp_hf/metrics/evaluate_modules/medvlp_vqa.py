"""Medical VQA accuracy (closed / open / overall) as an offline evaluate module.

Config "default": answer strings, exact match after VQA-v2 normalisation, plus open recall, token F1
and yes/no accuracy. Config "soft": per-question answer scores and soft targets (VQARADScore).
"""
import datasets
import evaluate

from medvlp_hf.metrics.vqa import vqa_accuracy
from medvlp_hf.metrics.vqa import vqa_soft_score

_INPUTS = (
    "default: predictions (str answers), references (str answers; give numbers as strings), answer_types ('OPEN'/'CLOSED'). "
    "soft: predictions (list of answer scores per question), references (list of soft targets), answer_types."
)


class MedVLPVQA(evaluate.Metric):
    """Closed/open/overall VQA accuracy in the conventions of MedViLL, M2I2, MISS and PTUnifier."""

    def _info(self):
        if self.config_name == "soft":
            answer = datasets.Sequence(datasets.Value("float64"))
            features = {"predictions": answer, "references": answer}
        else:
            features = {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
        features["answer_types"] = datasets.Value("string")
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(features),
        )

    def _compute(self, predictions, references, answer_types):
        if self.config_name == "soft":
            return vqa_soft_score(predictions, references, answer_types)
        return vqa_accuracy(predictions, references, answer_types)
