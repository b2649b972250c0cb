"""Datasets for medvlp-hf: loaders (`datasets.DatasetDict` with a lazily decoded `Image()` column), image
decoding (PIL 8/16-bit, DICOM), CheXpert labels, task collators, a synthetic demo set and TransCap (MISS's
image-caption pairs from labelled image-only data)."""
from .answers import answer_vocabulary, normalize_answer
from .chexpert import (
    CHEXPERT_LABELS, apply_label_policy, label_set, labels_from_names, parse_label_string,
)
from .collators import (
    ClassificationCollator, GenerativeVQACollator, LabelConditionedNegatives, MatchedPairCollator, PreTrainingCollator,
    RandomNegatives, ReportGenerationCollator, RetrievalGroupCollator, RetrievalPairCollator, VQACollator, build_label2id,
    retrieval_candidate_groups,
)
from .demo import DEMO_ANSWERS, demo_answers, load_demo
from .errors import DataFormatError, ImageDecodingError
from .image_caption import load_image_caption_json
from .imaging import load_image, to_pil_image
from .iu_xray import load_iu_xray
from .medicat import load_medicat
from .mimic_cxr import load_mimic_cxr
from .nih_cxr14 import NIH_CXR14_DEMOGRAPHICS, NIH_CXR14_TRANSCAP, load_nih_cxr14, load_transcap_nih
from .openi import load_openi_xml
from .pathvqa import load_pathvqa
from .r2gen import load_r2gen_annotation
from .report_jsonl import load_report_jsonl
from .roco import load_roco
from .slake import load_slake
from .transcap import (
    ATTRIBUTES, DEMOGRAPHIC_ATTRIBUTES, AttributeSource, TransCapCaptions, TransCapSpec, add_label_vectors,
    add_transcap_attributes, apply_transcap, attribute_dictionary, attribute_values, compose_caption,
    with_transcap_captions,
)
from .transcap_phrasebook import Phrasebook, build_phrasebook
from .vqa_rad import load_vqa_rad

__all__ = [
    "ATTRIBUTES",
    "CHEXPERT_LABELS",
    "DEMOGRAPHIC_ATTRIBUTES",
    "DEMO_ANSWERS",
    "NIH_CXR14_DEMOGRAPHICS",
    "NIH_CXR14_TRANSCAP",
    "AttributeSource",
    "ClassificationCollator",
    "DataFormatError",
    "GenerativeVQACollator",
    "ImageDecodingError",
    "LabelConditionedNegatives",
    "MatchedPairCollator",
    "Phrasebook",
    "PreTrainingCollator",
    "RandomNegatives",
    "ReportGenerationCollator",
    "RetrievalGroupCollator",
    "RetrievalPairCollator",
    "TransCapCaptions",
    "TransCapSpec",
    "VQACollator",
    "add_label_vectors",
    "add_transcap_attributes",
    "answer_vocabulary",
    "apply_label_policy",
    "apply_transcap",
    "attribute_dictionary",
    "attribute_values",
    "build_label2id",
    "build_phrasebook",
    "compose_caption",
    "demo_answers",
    "label_set",
    "labels_from_names",
    "load_demo",
    "load_image",
    "load_image_caption_json",
    "load_iu_xray",
    "load_medicat",
    "load_mimic_cxr",
    "load_nih_cxr14",
    "load_openi_xml",
    "load_pathvqa",
    "load_r2gen_annotation",
    "load_report_jsonl",
    "load_roco",
    "load_slake",
    "load_transcap_nih",
    "load_vqa_rad",
    "normalize_answer",
    "parse_label_string",
    "retrieval_candidate_groups",
    "to_pil_image",
    "with_transcap_captions",
]
