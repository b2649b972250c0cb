"""Image-report retrieval evaluation as MedViLL runs it: every query (an image, or a report) is scored by the
matching head against a group of candidates, and every candidate with the query's CheXpert label set counts
as relevant. The groups are split over the processes and gathered, so evaluation also runs under DDP."""

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate.utils import gather_object

from ..data import retrieval_candidate_groups, to_pil_image
from ..metrics import retrieval_metrics
from .datasets import id_column
from .runner import save_results

logger = logging.getLogger("medvlp_hf.training")

DIRECTIONS = ("i2t", "t2i")
LABEL_COLUMN = "labels"
RANKING_ROW_LENGTH = 10


@dataclass
class RetrievalArguments:
    num_candidates: int = field(
        default=100,
        metadata={"help": "Candidates per query (the query's own pair plus random others), as in the MedViLL paper; "
                  "capped at the size of the evaluated split."},
    )
    directions: str = field(
        default="i2t,t2i", metadata={"help": "Comma-separated: i2t (image query, report candidates), t2i."}
    )
    swap_image_probability: float = field(
        default=0.5,
        metadata={"help": "Training negatives: probability of replacing the image (else the report) of a pair with "
                  "one of a record with a different label set."},
    )

    def __post_init__(self):
        self.direction_list = [d.strip() for d in self.directions.split(",") if d.strip()]
        unknown = sorted(set(self.direction_list) - set(DIRECTIONS))
        if unknown or not self.direction_list:
            raise ValueError(f"--directions {self.directions!r}: choose from {DIRECTIONS}.")


@torch.no_grad()
def score_group(model, processor, dataset, text_column, group, direction, max_length=None):
    """Matching scores (K,) of one query against its candidates, in candidate order."""
    encode = {"padding": "longest", "truncation": True, "return_tensors": "pt"}
    if max_length is not None:
        encode["max_length"] = max_length
    if direction == "i2t":
        image = to_pil_image(dataset[group["query"]]["image"])
        texts = [dataset[index][text_column] for index in group["candidates"]]
        pixels, text = processor(images=[image], **encode), processor(text=texts, **encode)
        scores, _ = model.rank_texts(
            pixels["pixel_values"].to(model.device), text["input_ids"].to(model.device),
            text["attention_mask"].to(model.device),
        )
    else:
        images = [to_pil_image(dataset[index]["image"]) for index in group["candidates"]]
        pixels = processor(images=images, **encode)
        text = processor(text=[dataset[group["query"]][text_column]], **encode)
        scores, _ = model.rank_images(
            pixels["pixel_values"].to(model.device), text["input_ids"].to(model.device),
            text["attention_mask"].to(model.device),
        )
    return scores.float().cpu().numpy()


def retrieval_evaluator(trainer, processor, text_column, task_args, max_length=None):
    """evaluate(dataset, prefix) for `run_phases`: Hit/Recall/Precision@K, MRR and mAP@K per direction
    (`<prefix>_<direction>_<metric>`), and a predictions file with each query's top-ranked candidates."""

    def evaluate(dataset, prefix):
        num_candidates = min(task_args.num_candidates, len(dataset))
        if num_candidates < task_args.num_candidates:
            logger.warning(f"{prefix}: only {len(dataset)} records, so {num_candidates} candidates per query "
                           f"instead of {task_args.num_candidates}.")
        groups = retrieval_candidate_groups(dataset[LABEL_COLUMN], num_candidates, seed=trainer.args.seed)
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.eval()
        ids = dataset[id_column(dataset)]
        metrics, rows = {f"{prefix}_samples": len(dataset), f"{prefix}_num_candidates": num_candidates}, []
        for direction in task_args.direction_list:
            with trainer.accelerator.split_between_processes(groups) as shard:
                shard_scores = [score_group(model, processor, dataset, text_column, group, direction, max_length)
                                for group in shard]
            scores = np.stack(gather_object(shard_scores))
            relevance = np.array([group["relevance"] for group in groups], dtype=bool)
            scores_by_name = retrieval_metrics(scores, relevance)
            metrics.update({f"{prefix}_{direction}_{name}": value for name, value in scores_by_name.items()})
            rows.extend(_ranking_rows(direction, groups, scores, ids))
        return save_results(trainer, prefix, metrics, rows)

    return evaluate


def _ranking_rows(direction, groups, scores, ids):
    for group, row_scores in zip(groups, scores):
        order = np.argsort(-row_scores, kind="stable")
        relevance = np.asarray(group["relevance"])[order]
        yield {
            "direction": direction,
            "query_id": ids[group["query"]],
            "top_candidates": [ids[group["candidates"][i]] for i in order[:RANKING_ROW_LENGTH]],
            "top_relevance": relevance[:RANKING_ROW_LENGTH].astype(int).tolist(),
            "first_relevant_rank": int(relevance.argmax()) + 1,
        }
