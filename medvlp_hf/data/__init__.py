"""Datasets for medvlp-hf: loaders (`datasets.DatasetDict` with a lazily decoded `Image()` column), image
decoding (PIL 8/16-bit, DICOM), CheXpert labels, task collators and a synthetic demo set."""
from .answers import answer_vocabulary, normalize_answer
from .chexpert import (
    CHEXPERT_LABELS, apply_label_policy, label_set, labels_from_names, parse_label_string,
)
from .collators import (
    ClassificationCollator, GenerativeVQACollator, LabelConditionedNegatives, PreTrainingCollator, RandomNegatives,
    ReportGenerationCollator, RetrievalGroupCollator, RetrievalPairCollator, VQACollator, build_label2id,
    retrieval_candidate_groups,
)
from .demo import DEMO_ANSWERS, demo_answers, load_demo
from .errors import DataFormatError, ImageDecodingError
from .image_caption import load_image_caption_json
from .imaging import load_image, to_pil_image
from .iu_xray import load_iu_xray
from .medicat import load_medicat
from .mimic_cxr import load_mimic_cxr
from .openi import load_openi_xml
from .pathvqa import load_pathvqa
from .r2gen import load_r2gen_annotation
from .report_jsonl import load_report_jsonl
from .roco import load_roco
from .slake import load_slake
from .vqa_rad import load_vqa_rad

__all__ = [
    "CHEXPERT_LABELS",
    "DEMO_ANSWERS",
    "ClassificationCollator",
    "DataFormatError",
    "GenerativeVQACollator",
    "ImageDecodingError",
    "LabelConditionedNegatives",
    "PreTrainingCollator",
    "RandomNegatives",
    "ReportGenerationCollator",
    "RetrievalGroupCollator",
    "RetrievalPairCollator",
    "VQACollator",
    "answer_vocabulary",
    "apply_label_policy",
    "build_label2id",
    "demo_answers",
    "label_set",
    "labels_from_names",
    "load_demo",
    "load_image",
    "load_image_caption_json",
    "load_iu_xray",
    "load_medicat",
    "load_mimic_cxr",
    "load_openi_xml",
    "load_pathvqa",
    "load_r2gen_annotation",
    "load_report_jsonl",
    "load_roco",
    "load_slake",
    "load_vqa_rad",
    "normalize_answer",
    "parse_label_string",
    "retrieval_candidate_groups",
    "to_pil_image",
]
