"""Report generation evaluation: decode reports from the images alone, score them against the references with
the NLG metrics (BLEU, ROUGE-L, CIDEr-D, optional METEOR, MedViLL's NLTK BLEU) and clinical efficacy."""

from dataclasses import dataclass, field

import logging

import numpy as np

from ..metrics import compute_clinical_efficacy, compute_report_generation_metrics
from ..metrics.chexpert_labels import FIVE_OBSERVATIONS
from .datasets import id_column

logger = logging.getLogger("medvlp_hf.training")

IGNORE_INDEX = -100
# scalar clinical-efficacy scores reported (the 14 CheXpert observations and the 5-observation subset)
CLINICAL_EFFICACY_KEYS = tuple(
    f"{score}_{average}_{subset}"
    for subset in ("14", "5")
    for average in ("micro", "macro")
    for score in ("precision", "recall", "f1")
) + ("medvill_accuracy", "medvill_f1")


@dataclass
class ReportGenerationArguments:
    max_new_tokens: int = field(default=128, metadata={"help": "Longest generated report in tokens (MedViLL: 128)."})
    num_beams: int = field(default=1, metadata={"help": "Beam size (MedViLL's released decoding is greedy)."})
    meteor: bool = field(
        default=False, metadata={"help": "Also compute METEOR 1.5 (needs Java and pycocoevalcap; ~10 s start-up)."}
    )
    clinical_efficacy: bool = field(
        default=True,
        metadata={"help": "Label generated and reference reports with the rule-based CheXpert labeler and report "
                  f"precision/recall/F1 over the 14 observations and the 5 ({', '.join(FIVE_OBSERVATIONS)})."},
    )


def normalize_reports(tokenizer, texts):
    """Texts as the tokenizer round trip writes them (lower case, WordPiece detokenised), so references
    and generated reports are compared in the same form."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def decode_generated(tokenizer, token_ids):
    """Generated ids (padded with -100 by Trainer) -> report texts without special tokens."""
    token_ids = np.where(np.asarray(token_ids) == IGNORE_INDEX, tokenizer.pad_token_id, token_ids)
    return tokenizer.batch_decode(token_ids.tolist(), skip_special_tokens=True)


def report_generation_metrics(tokenizer, text_column, task_args):
    """metrics_for(dataset) for `trainer_evaluator`: NLG scores (+ `ce_*` clinical efficacy) of the decoded
    predictions against the split's reports, in dataset order."""

    def metrics_for(dataset):
        references = normalize_reports(tokenizer, dataset[text_column])

        def compute_metrics(prediction):
            generated = decode_generated(tokenizer, prediction.predictions)
            scores = compute_report_generation_metrics(generated, references, meteor=task_args.meteor)
            note = scores.pop("meteor_note", None)
            if scores["meteor"] is None:
                del scores["meteor"]
                if task_args.meteor:
                    logger.warning(f"METEOR not reported: {note}")
            if task_args.clinical_efficacy:
                efficacy = compute_clinical_efficacy(generated, references)
                scores.update({f"ce_{key}": efficacy[key] for key in CLINICAL_EFFICACY_KEYS})
            return scores

        return compute_metrics

    return metrics_for


def report_prediction_rows(tokenizer, text_column):
    def rows(output, dataset):
        generated = decode_generated(tokenizer, output.predictions)
        ids = dataset[id_column(dataset)]
        for row_id, reference, report in zip(ids, dataset[text_column], generated, strict=True):
            yield {"id": row_id, "reference": reference, "generated": report}

    return rows

