"""Metrics that give the five papers' numbers, offline: plain functions plus ``evaluate`` modules.

Families: VQA (``vqa_accuracy``, ``vqa_soft_score``), report generation
(``compute_report_generation_metrics``, ``perplexity``), clinical efficacy (``CheXpertRuleLabeler``,
``CheXbertLabeler``, ``compute_clinical_efficacy``), retrieval (``retrieval_metrics``,
``cross_modal_recall_at_k``, ``cross_modal_recall_from_rankings``), classification (``classification_metrics``). ``load(name)`` returns the
matching ``evaluate`` module.
"""
from medvlp_hf.metrics.bleu import coco_bleu
from medvlp_hf.metrics.bleu import medvill_bleu
from medvlp_hf.metrics.bleu import nltk_corpus_bleu
from medvlp_hf.metrics.chexpert_labeler import CheXpertRuleLabeler
from medvlp_hf.metrics.chexpert_labels import CHEXPERT_OBSERVATIONS
from medvlp_hf.metrics.chexpert_labels import FIVE_OBSERVATIONS
from medvlp_hf.metrics.chexpert_labels import ReportLabeler
from medvlp_hf.metrics.cider import cider_d
from medvlp_hf.metrics.classification import binary_auroc
from medvlp_hf.metrics.classification import classification_metrics
from medvlp_hf.metrics.clinical_efficacy import binarize_labels
from medvlp_hf.metrics.clinical_efficacy import clinical_efficacy_scores
from medvlp_hf.metrics.clinical_efficacy import compute_clinical_efficacy
from medvlp_hf.metrics.clinical_efficacy import medvill_label_accuracy
from medvlp_hf.metrics.loading import load
from medvlp_hf.metrics.loading import module_path
from medvlp_hf.metrics.meteor_java import meteor_score
from medvlp_hf.metrics.meteor_java import meteor_unavailable_reason
from medvlp_hf.metrics.perplexity_from_logits import perplexity
from medvlp_hf.metrics.perplexity_from_logits import token_cross_entropy_sum
from medvlp_hf.metrics.report_generation import compute_report_generation_metrics
from medvlp_hf.metrics.retrieval import cross_modal_recall_at_k
from medvlp_hf.metrics.retrieval import cross_modal_recall_from_rankings
from medvlp_hf.metrics.retrieval import map_at_k_capped
from medvlp_hf.metrics.retrieval import map_at_k_hits
from medvlp_hf.metrics.retrieval import map_at_k_trec
from medvlp_hf.metrics.retrieval import relevance_from_labels
from medvlp_hf.metrics.retrieval import retrieval_metrics
from medvlp_hf.metrics.rouge import rouge_l
from medvlp_hf.metrics.vqa import vqa_accuracy
from medvlp_hf.metrics.vqa import vqa_soft_score
from medvlp_hf.metrics.vqa_normalization import normalize_vqa_answer


def __getattr__(name):
    """CheXbert needs torch + transformers; import it only when asked for."""
    if name == "CheXbertLabeler":
        from medvlp_hf.metrics.chexbert_labeler import CheXbertLabeler

        return CheXbertLabeler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHEXPERT_OBSERVATIONS",
    "CheXbertLabeler",
    "CheXpertRuleLabeler",
    "FIVE_OBSERVATIONS",
    "ReportLabeler",
    "binarize_labels",
    "binary_auroc",
    "cider_d",
    "classification_metrics",
    "clinical_efficacy_scores",
    "coco_bleu",
    "compute_clinical_efficacy",
    "compute_report_generation_metrics",
    "cross_modal_recall_at_k",
    "cross_modal_recall_from_rankings",
    "load",
    "map_at_k_capped",
    "map_at_k_hits",
    "map_at_k_trec",
    "medvill_bleu",
    "medvill_label_accuracy",
    "meteor_score",
    "meteor_unavailable_reason",
    "module_path",
    "nltk_corpus_bleu",
    "normalize_vqa_answer",
    "perplexity",
    "relevance_from_labels",
    "retrieval_metrics",
    "rouge_l",
    "token_cross_entropy_sum",
    "vqa_accuracy",
    "vqa_soft_score",
]
