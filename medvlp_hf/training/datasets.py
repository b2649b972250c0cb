"""`--dataset NAME --data_dir DIR` -> the loader of medvlp_hf.data, and the train/eval/predict splits of a run."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import data

logger = logging.getLogger("medvlp_hf.training")

VQA, REPORT_GENERATION, CLASSIFICATION, RETRIEVAL, PRETRAINING = (
    "vqa", "report_generation", "classification", "retrieval", "pretraining",
)
# (train, test) rows of the synthetic demo set unless --max_*_samples asks for others. Its VQA rows ask one question
# per image, so an image teaches one answer about one finding, where a report or label set supervises all of them. On
# 512 rows the tiny preset memorises the images instead of learning the findings (20 epochs: closed accuracy 1.00 on
# the training questions, 0.69 on the test ones); over 2048 images it reaches about 0.8 within 750 steps.
DEMO_SIZES = {VQA: (2048, 256)}
DEMO_DEFAULT_SIZES = (512, 128)
# `--dataset image_caption_json`: the split files ALBEF-style pre-training JSON (M2I2's `clef2022_train.json`, ...) is
# read from, in --data_dir, whose images the records name relative to --data_dir.
IMAGE_CAPTION_SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetEntry:
    load: Callable  # (DataArguments, task) -> DatasetDict; (DataArguments, task, seed) when `seeded`
    tasks: frozenset
    needs_data_dir: bool = True
    seeded: bool = False  # draws at random while training (TransCap captions), from the run's --seed


def _load_demo(args, task):
    num_train, num_test = DEMO_SIZES.get(task, DEMO_DEFAULT_SIZES)
    num_train = args.max_train_samples or num_train
    num_test = max((n for n in (args.max_eval_samples, args.max_predict_samples) if n), default=num_test)
    logger.info(f"Drawing the synthetic demo set: {num_train} training and {num_test} test chest X-rays (a few "
                "seconds per thousand).")
    return data.load_demo(num_train=num_train, num_test=num_test)


def _load_image_caption_json(args, task):
    folder = Path(args.data_dir)
    files = {split: folder / f"{split}.json" for split in IMAGE_CAPTION_SPLITS if (folder / f"{split}.json").is_file()}
    if not files:
        raise FileNotFoundError(
            f"--dataset image_caption_json reads {', '.join(f'{s}.json' for s in IMAGE_CAPTION_SPLITS)} (any of them: "
            f'JSON lists of {{"image": path relative to --data_dir, "caption": text or list}}) in --data_dir; '
            f"{folder} has none."
        )
    return data.load_image_caption_json(files, image_root=folder)


_REPORT_TASKS = frozenset({REPORT_GENERATION, CLASSIFICATION, RETRIEVAL, PRETRAINING})
DATASETS = {
    "demo": DatasetEntry(_load_demo, frozenset({VQA}) | _REPORT_TASKS, needs_data_dir=False),
    "vqa_rad": DatasetEntry(lambda args, task: data.load_vqa_rad(args.data_dir, organ=args.organ), frozenset({VQA})),
    "slake": DatasetEntry(lambda args, task: data.load_slake(args.data_dir, language=args.language), frozenset({VQA})),
    "pathvqa": DatasetEntry(lambda args, task: data.load_pathvqa(args.data_dir), frozenset({VQA})),
    "mimic_cxr": DatasetEntry(lambda args, task: data.load_mimic_cxr(args.data_dir), _REPORT_TASKS),
    "report_jsonl": DatasetEntry(lambda args, task: data.load_report_jsonl(args.data_dir), _REPORT_TASKS),
    "iu_xray": DatasetEntry(
        lambda args, task: data.load_iu_xray(args.data_dir), frozenset({REPORT_GENERATION, PRETRAINING})
    ),
    "roco": DatasetEntry(lambda args, task: data.load_roco(args.data_dir), frozenset({PRETRAINING})),
    "medicat": DatasetEntry(lambda args, task: data.load_medicat(args.data_dir), frozenset({PRETRAINING})),
    "image_caption_json": DatasetEntry(_load_image_caption_json, frozenset({PRETRAINING})),
    "transcap_nih": DatasetEntry(
        lambda args, task, seed: data.load_transcap_nih(args.data_dir, phrasebook=args.transcap_phrasebook, seed=seed),
        frozenset({PRETRAINING}), seeded=True,
    ),
}


def datasets_for(task):
    return sorted(name for name, entry in DATASETS.items() if task in entry.tasks)


def load_task_dataset(data_args, task, seed=None):
    """The DatasetDict of `--dataset` for `task`, with a clear error for unknown names and missing folders.

    `seed`: the run's --seed (`training_args.seed`), which a dataset that draws at random while training (TransCap's
    captions) needs: its draws are then reproducible under that seed and differ between seeds.
    """
    entry = DATASETS.get(data_args.dataset)
    if entry is None or task not in entry.tasks:
        raise ValueError(f"--dataset {data_args.dataset!r} is not available for {task}; choose one of "
                         f"{datasets_for(task)}.")
    if entry.needs_data_dir and data_args.data_dir is None:
        raise ValueError(f"--dataset {data_args.dataset} reads files: pass --data_dir with the dataset's folder.")
    if not entry.seeded:
        return entry.load(data_args, task)
    if seed is None:
        raise ValueError(f"--dataset {data_args.dataset} draws its captions at random while training: pass the run's "
                         "seed, load_task_dataset(data_args, task, seed=training_args.seed).")
    return entry.load(data_args, task, seed)


def text_column(dataset):
    """The report-like text column: `report` (radiology reports) or `caption` (figure captions)."""
    for name in ("report", "caption"):
        if name in dataset.column_names:
            return name
    raise ValueError(f"the dataset has no report or caption column (columns: {dataset.column_names}).")


def id_column(dataset):
    """The column naming each example: `id` for report datasets, `qid` for the demo and VQA sets."""
    for name in ("id", "qid"):
        if name in dataset.column_names:
            return name
    raise ValueError(f"the dataset has no id or qid column (columns: {dataset.column_names}).")


def eval_split_name(dataset_dict, data_args):
    """--eval_split, else 'validation' when present, else 'test' (VQA-RAD has only train/test)."""
    if data_args.eval_split is not None:
        return data_args.eval_split
    return "validation" if "validation" in dataset_dict else "test"


def run_splits(dataset_dict, data_args, training_args):
    """The (truncated) splits the requested phases need, as ({phase: dataset}, {phase: split name}) with
    phases 'train', 'eval' and 'predict'."""
    wanted = {
        "train": (training_args.do_train, "train", data_args.max_train_samples),
        "eval": (training_args.do_eval, eval_split_name(dataset_dict, data_args), data_args.max_eval_samples),
        "predict": (training_args.do_predict, data_args.predict_split, data_args.max_predict_samples),
    }
    splits, names = {}, {}
    for phase, (needed, split, limit) in wanted.items():
        if not needed:
            continue
        if split not in dataset_dict:
            raise ValueError(f"--dataset {data_args.dataset} has no {split!r} split for {phase} "
                             f"(splits: {list(dataset_dict)}).")
        dataset = dataset_dict[split]
        splits[phase] = dataset.select(range(min(limit, len(dataset)))) if limit else dataset
        names[phase] = split
    return splits, names
