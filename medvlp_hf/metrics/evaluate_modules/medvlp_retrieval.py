"""Retrieval metrics as an offline evaluate module.

Config "default" (MedViLL): one row per query, predictions = candidate scores, references = candidate
relevance (0/1); returns Hit/Recall/Precision@K, MRR and mAP@K (hits / trec / capped normalisers).
Config "cross_modal" (PTUnifier, MedUnifier): one row per image, predictions = its similarity to every
text, references = the index of its paired text; returns R@K image->text and text->image.
"""
import datasets
import evaluate
import numpy as np

from medvlp_hf.metrics.retrieval import cross_modal_recall_at_k
from medvlp_hf.metrics.retrieval import retrieval_metrics


class MedVLPRetrieval(evaluate.Metric):
    """Label-relevance ranking metrics or instance-relevance cross-modal R@K."""

    def _info(self):
        if self.config_name == "cross_modal":
            references = datasets.Value("int64")
        else:
            references = datasets.Sequence(datasets.Value("int8"))
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="see the module docstring",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")), "references": references}),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10), empty_queries="error"):
        if self.config_name != "cross_modal":
            return retrieval_metrics(predictions, references, ks=ks, empty_queries=empty_queries)
        paired_text = np.asarray(references, dtype=np.int64)
        if sorted(paired_text.tolist()) != list(range(len(paired_text))):
            raise ValueError("cross_modal references must pair every image with a distinct text index 0..N-1")
        text_to_image = np.empty_like(paired_text)
        text_to_image[paired_text] = np.arange(len(paired_text))
        return cross_modal_recall_at_k(predictions, ks=ks, text_to_image=text_to_image)
