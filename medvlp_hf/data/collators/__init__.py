"""Task collators turning dataset rows into model batches with any zoo processor (`base` defines the processor
protocol they rely on)."""
from .classification import ClassificationCollator
from .masking import IGNORE_INDEX, mask_tokens_for_mlm
from .negatives import LabelConditionedNegatives, NegativeSampler, RandomNegatives
from .pretraining import PreTrainingCollator
from .report_generation import ReportGenerationCollator
from .retrieval import MatchedPairCollator, RetrievalGroupCollator, RetrievalPairCollator, retrieval_candidate_groups
from .vqa import GenerativeVQACollator, VQACollator, build_label2id

__all__ = [
    "IGNORE_INDEX",
    "ClassificationCollator",
    "GenerativeVQACollator",
    "LabelConditionedNegatives",
    "MatchedPairCollator",
    "NegativeSampler",
    "PreTrainingCollator",
    "RandomNegatives",
    "ReportGenerationCollator",
    "RetrievalGroupCollator",
    "RetrievalPairCollator",
    "VQACollator",
    "build_label2id",
    "mask_tokens_for_mlm",
    "retrieval_candidate_groups",
]
