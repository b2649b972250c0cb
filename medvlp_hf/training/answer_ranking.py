"""VQA by answer ranking, as M2I2 (ALBEF) evaluates it: the model trains its answer decoder on the reference answers
(teacher-forced, like a generative model) and answers a test question by ranking a candidate list
(`rank_answers`: the candidates whose first token is most probable, re-scored by their full likelihood). The chosen
answers are scored as generative answers are (`generative_vqa`)."""

from pathlib import Path

import numpy as np

from ..data import answer_vocabulary
from .vqa import read_answer_list


def ranks_answers(model_class) -> bool:
    """Whether the model class is evaluated by ranking a candidate list: its paper's evaluation does so
    (`evaluates_by_ranking`, M2I2ForVQA) and it defines `rank_answers`. Such a model is evaluated by ranking even
    though it can also `generate()`; MISSForVQA can rank too, but its released evaluation writes the answers."""
    return getattr(model_class, "evaluates_by_ranking", False) and callable(getattr(model_class, "rank_answers", None))


def candidate_answers(vqa_args, dataset_dict) -> list[str]:
    """The candidates every question is ranked over: --answer_list, else the training answers (normalised, seen at
    least --min_answer_count times, most frequent first). Raises ValueError when neither is available."""
    if vqa_args.answer_list is not None:
        return read_answer_list(Path(vqa_args.answer_list))
    if "train" not in dataset_dict:
        raise ValueError("answer ranking needs candidate answers: pass --answer_list, or a dataset with a train split "
                         "(its answers are the candidates).")
    answers = answer_vocabulary(dataset_dict["train"]["answer"], min_count=vqa_args.min_answer_count)
    if not answers:
        raise ValueError(f"no training answer is seen --min_answer_count {vqa_args.min_answer_count} times; lower it "
                         "or pass --answer_list.")
    return answers


def ranked_answer_decoder(candidates):
    """predictions -> answers of `AnswerRankingTrainer`: the chosen candidate indices (B, 1) as candidate texts."""

    def decode(indices) -> list[str]:
        return [candidates[int(index)] for index in np.asarray(indices).reshape(-1)]

    return decode
