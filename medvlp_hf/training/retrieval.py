"""Image-report retrieval evaluation of a split, by the protocol the model supports:

- two-stage (models with contrastive features and a pair score, `TwoStageRetrievalModel`: MISS, M2I2, ...): every
  image against every text by ITC similarity, the top k of each query re-ranked by the matching head; R@K in both
  directions with instance relevance, as ALBEF and BLIP evaluate (`two_stage_retrieval`);
- MedViLL's: every query (an image, or a report) is scored by the matching head against a group of candidates, and
  every candidate with the query's CheXpert label set counts as relevant.

Both split their work over the processes and gather it, so evaluation also runs under DDP."""

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate.utils import gather_object

from ..data import retrieval_candidate_groups, to_pil_image
from ..metrics import retrieval_metrics
from .datasets import id_column
from .runner import save_results
from .two_stage_retrieval import supports_two_stage_retrieval, two_stage_retrieval

logger = logging.getLogger("medvlp_hf.training")

DIRECTIONS = ("i2t", "t2i")
LABEL_COLUMN = "labels"
RANKING_ROW_LENGTH = 10


@dataclass
class RetrievalArguments:
    num_candidates: int = field(
        default=100,
        metadata={"help": "MedViLL's protocol: candidates per query (the query's own pair plus random others), as in "
                  "the MedViLL paper; capped at the size of the evaluated split."},
    )
    directions: str = field(
        default="i2t,t2i", metadata={"help": "Comma-separated: i2t (image query, report candidates), t2i."}
    )
    swap_image_probability: float = field(
        default=0.5,
        metadata={"help": "MedViLL's training negatives: probability of replacing the image (else the report) of a "
                  "pair with one of a record with a different label set."},
    )
    rerank_top_k: int = field(
        default=128,
        metadata={"help": "Two-stage retrieval (models with contrastive features and a matching head, e.g. MISS): "
                  "candidates per query re-ranked by the matching head after the ITC similarity (BLIP's k_test: "
                  "128 on Flickr30k, 256 on COCO); at least the split's size re-ranks every pair."},
    )
    rerank_adds_similarity: bool = field(
        default=False,
        metadata={"help": "Two-stage retrieval: re-rank by matching logit + ITC cosine (BLIP) instead of the matching "
                  "logit alone (ALBEF)."},
    )
    image_id_column: str | None = field(
        default=None,
        metadata={"help": "Two-stage retrieval: a column naming each record's image. Records with equal values are one "
                  "image whose texts all count as its ground truth (and are positives of each other in training); "
                  "default: every record is its own image."},
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
    """evaluate(dataset, prefix) for `run_phases`, by the protocol the trained model supports: two-stage R@K
    (`two_stage_evaluator`), else MedViLL's candidate groups: Hit/Recall/Precision@K, MRR and mAP@K per direction
    (`<prefix>_<direction>_<metric>`); and a predictions file with each query's top-ranked candidates."""
    two_stage = two_stage_evaluator(trainer, processor, text_column, task_args, max_length)

    def evaluate(dataset, prefix):
        if supports_two_stage_retrieval(trainer.accelerator.unwrap_model(trainer.model)):
            return two_stage(dataset, prefix)
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


def image_groups(dataset, image_id_column=None):
    """(rows, text_to_image): the dataset row whose image stands for each distinct image, in order of first
    appearance, and each row's image index. Every row is its own image unless `image_id_column` names a column whose
    equal values mark rows of one image."""
    if image_id_column is None:
        return list(range(len(dataset))), list(range(len(dataset)))
    if image_id_column not in dataset.column_names:
        raise ValueError(f"--image_id_column {image_id_column!r} is not a column of the dataset "
                         f"({dataset.column_names}).")
    image_of_id, rows, text_to_image = {}, [], []
    for row, image_id in enumerate(dataset[image_id_column]):
        if image_id not in image_of_id:
            image_of_id[image_id] = len(rows)
            rows.append(row)
        text_to_image.append(image_of_id[image_id])
    return rows, text_to_image


class ProcessedImages:
    """The images of dataset rows as pixel values, decoded on demand: `images[[i, j]]` -> (2, 3, H, W) of rows
    `rows[i]`, `rows[j]` (what `two_stage_retrieval` reads, so a split never sits in memory as pixels)."""

    def __init__(self, dataset, processor, rows, image_column="image"):
        self.dataset, self.processor, self.rows, self.image_column = dataset, processor, rows, image_column

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, indices):
        images = [to_pil_image(self.dataset[self.rows[index]][self.image_column]) for index in indices]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]


def two_stage_evaluator(trainer, processor, text_column, task_args, max_length=None):
    """evaluate(dataset, prefix) by two-stage retrieval: `<prefix>_<direction>_r@K` after re-ranking the top
    `--rerank_top_k`, `<prefix>_itc_<direction>_r@K` of the similarity alone, and a predictions file with each
    query's top-ranked candidates (texts named by their record's id, images by the id of their first record) and the
    rank of its first ground-truth candidate (None when it is not among the first max(k, 10))."""

    def evaluate(dataset, prefix):
        rows, text_to_image = image_groups(dataset, task_args.image_id_column)
        encode = {"padding": "longest", "truncation": True, "return_tensors": "pt"}
        if max_length is not None:
            encode["max_length"] = max_length
        texts = processor(text=list(dataset[text_column]), **encode)
        result = two_stage_retrieval(
            trainer.accelerator.unwrap_model(trainer.model), ProcessedImages(dataset, processor, rows),
            texts["input_ids"], texts["attention_mask"], text_to_image, k=task_args.rerank_top_k,
            batch_size=trainer.args.per_device_eval_batch_size, add_similarity=task_args.rerank_adds_similarity,
            process_state=trainer.accelerator,
        )
        ids = dataset[id_column(dataset)]
        metrics = {
            f"{prefix}_samples": len(dataset),
            f"{prefix}_num_images": len(rows),
            f"{prefix}_rerank_top_k": task_args.rerank_top_k,
        }
        metrics.update({f"{prefix}_{name}": value for name, value in result.metrics.items()
                        if name.removeprefix("itc_")[:3] in task_args.direction_list})
        image_ids = [ids[row] for row in rows]
        predictions = []
        if "i2t" in task_args.direction_list:
            truth = [set() for _ in rows]
            for text, image in enumerate(text_to_image):
                truth[image].add(text)
            predictions += _two_stage_rows("i2t", image_ids, ids, result.image_rankings, truth)
        if "t2i" in task_args.direction_list:
            predictions += _two_stage_rows("t2i", ids, image_ids, result.text_rankings,
                                           [{image} for image in text_to_image])
        return save_results(trainer, prefix, metrics, predictions)

    return evaluate


def _two_stage_rows(direction, query_ids, candidate_ids, rankings, truth):
    for query, ranking in enumerate(rankings.tolist()):
        ranks = [rank for rank, candidate in enumerate(ranking) if candidate in truth[query]]
        yield {
            "direction": direction,
            "query_id": query_ids[query],
            "top_candidates": [candidate_ids[candidate] for candidate in ranking[:RANKING_ROW_LENGTH]],
            "first_relevant_rank": ranks[0] + 1 if ranks else None,
        }
