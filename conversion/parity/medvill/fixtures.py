"""The detailed tiny fixtures of tests/fixtures/medvill (see its README): every released attention mask in
pre-training, VQA with its loss, report generation's masked LM, true greedy decoding and the released teacher-forced
decoder, retrieval and classification, each through the authors' own pipelines and classes (`original`).
"""

import random

import torch
from torch.nn import functional as F

import original

PRETRAINING_TEXTS = ["w120 w121 w150 w199", "w104 w130 w131 w177 w160 w161 w162"]
PRETRAINING_SEQ_LEN = 8
PRETRAINING_IMAGE_TOKENS = 3
# data seed of each mask (bi_s2s: the first seed from 400 whose batch holds one bidirectional and one s2s sample)
DATA_SEEDS = {"bidirectional": 100, "s2s": 200, "bar": 300, "bi_s2s": 400}
# torch.randperm during each forward, so the kept grid cells are fixed
PERMUTATIONS = {"bidirectional": [3, 0, 2, 1], "s2s": [1, 3, 2, 0], "bar": [0, 3, 1, 2], "bi_s2s": [2, 0, 1, 3]}
ITM_LABELS = [1, 0]
DOWNSTREAM_IMAGE_TOKENS = 4
MAX_LEN_B = 8
QUESTIONS = [["w140", "w141", "w142"], ["w150", "w151", "w152", "w153", "w154", "w155"]]
ANSWER_SCORES = [{2: 1.0}, {1: 0.3, 5: 0.9}]  # soft VQA targets, as target.scatter_(0, labels, scores)
ANSWER_TYPES = [0, 1]  # closed, open
REPORTS = [[f"w{i}" for i in range(110, 115)], [f"w{i}" for i in range(120, 128)]]
REPORT_MASK_PROB = 0.4  # instead of 0.15, so that several tokens are masked
REPORT_SEED = 500
GREEDY_STEPS = 12
TEACHER_FORCED_TXT_LENGTH = 128
TEACHER_FORCED_LOGIT_STEPS = 16
RETRIEVAL_TEXTS = ["w120 w121 w150 w199", "w104 w130 w131 w177 w160 w161 w162 w163"]
RETRIEVAL_PAIRS = [(0, 0), (0, 1), (1, 0), (1, 1)]  # (image, text)
CLASSIFICATION_TEXTS = ["w140 w141 w142", "w150 w151 w152 w153 w154 w155 w156"]
CLASSIFICATION_LABELS = ["'Atelectasis'", "'Cardiomegaly'", "'Edema'", "'No Finding'", "'Others'"]
MASK, SEP = 103, 102


def pretraining(run, state_dict, pixel_values):
    tensors, meta = {}, {"tokens": PRETRAINING_TEXTS, "seq_len": PRETRAINING_SEQ_LEN,
                         "num_image_embeds": PRETRAINING_IMAGE_TOKENS, "data_seed": {}, "image_token_indices": {}}
    model = original.pretraining_model(run, state_dict, PRETRAINING_IMAGE_TOKENS)
    num_cells = pixel_values.shape[-1] // 32 * (pixel_values.shape[-2] // 32)
    for mask, seed in DATA_SEEDS.items():
        dataset = original.pretraining_dataset(run, mask, PRETRAINING_SEQ_LEN, PRETRAINING_IMAGE_TOKENS, PRETRAINING_TEXTS)
        while True:
            batch = original.pretraining_batch(dataset, [seed + i for i in range(len(PRETRAINING_TEXTS))])
            kinds = ["bidirectional" if bool(row[0, PRETRAINING_IMAGE_TOKENS + 2]) else "s2s" for row in batch[3]]
            if mask != "bi_s2s" or kinds == ["bidirectional", "s2s"]:
                break
            seed += 1
        cells = torch.tensor(sorted(PERMUTATIONS[mask][:PRETRAINING_IMAGE_TOKENS]))
        logits, itm_logits = original.pretraining_forward(model, batch, pixel_values, cells, num_cells)
        _, input_ids, txt_labels, attn_mask, _, segment, _, _ = batch
        itm_labels = torch.tensor(ITM_LABELS)
        tensors.update({f"{mask}.{name}": value for name, value in {
            "input_txt": input_ids, "text_mask": (input_ids != 0).long(), "segment": segment, "attn_mask": attn_mask,
            "txt_labels": txt_labels, "itm_labels": itm_labels, "image_token_indices": cells, "mlm_logits": logits,
            "itm_logits": itm_logits, "mlm_loss": F.cross_entropy(logits.transpose(1, 2), txt_labels, ignore_index=-100),
            "itm_loss": F.cross_entropy(itm_logits, itm_labels)}.items()})
        meta["data_seed"][mask] = seed
        meta["image_token_indices"][mask] = cells.tolist()
        if mask == "bi_s2s":
            meta["per_sample_mask"] = {mask: kinds}
    meta["non_crossing"] = non_crossing_error(run, state_dict, pixel_values, num_cells)
    tensors["non_crossing.error"] = torch.tensor(0)
    return tensors, meta


def non_crossing_error(run, state_dict, pixel_values, num_cells):
    """The released --disturbing_mask path builds a T x T mask for a T + 1 long input; the error it raises."""
    dataset = original.pretraining_dataset(run, "bidirectional", PRETRAINING_SEQ_LEN, PRETRAINING_IMAGE_TOKENS,
                                           PRETRAINING_TEXTS, disturbing_mask=True)
    model = original.pretraining_model(run, state_dict, PRETRAINING_IMAGE_TOKENS, disturbing_mask=True)
    batch = original.pretraining_batch(dataset, [0, 1])
    try:
        original.pretraining_forward(model, batch, pixel_values, torch.arange(PRETRAINING_IMAGE_TOKENS), num_cells)
    except RuntimeError as error:
        return f"RuntimeError: {error}"
    raise AssertionError("the released non-crossing path ran; record its outputs instead of its error")


def vqa(run, state_dict, pixel_values, num_answers):
    model = original.downstream_model(run, "vqa", state_dict, DOWNSTREAM_IMAGE_TOKENS, num_answers)
    pipeline = original.seq2seq_pipeline(run, "vqa", "bi", DOWNSTREAM_IMAGE_TOKENS, MAX_LEN_B)
    input_ids, segment_ids, input_mask, *_ = original.seq2seq_inputs(run, pipeline, QUESTIONS)
    ans_labels = torch.zeros(len(QUESTIONS), num_answers)
    for row, scores in enumerate(ANSWER_SCORES):
        ans_labels[row, list(scores)] = torch.tensor(list(scores.values()))
    ans_type = torch.tensor(ANSWER_TYPES)
    logits, loss, accuracy = original.vqa_forward(model, pixel_values, input_ids, segment_ids, input_mask, ans_labels,
                                                  ans_type)
    tensors = {"input_ids": input_ids, "segment_ids": segment_ids, "attention_mask": input_mask,
               "ans_labels": ans_labels, "ans_type": ans_type, "vqa_logits": logits, "vqa_loss": loss,
               "vqa_acc": accuracy}
    return tensors, {"len_vis_input": DOWNSTREAM_IMAGE_TOKENS, "max_len_b": MAX_LEN_B, "num_answers": num_answers,
                     "questions": QUESTIONS}


def report_generation(run, state_dict, pixel_values):
    model = original.downstream_model(run, "report_generation", state_dict, DOWNSTREAM_IMAGE_TOKENS)
    pipeline = original.seq2seq_pipeline(run, "report_generation", "s2s", DOWNSTREAM_IMAGE_TOKENS, MAX_LEN_B,
                                          mask_prob=REPORT_MASK_PROB)
    inputs = original.seq2seq_inputs(run, pipeline, REPORTS, seeds=[REPORT_SEED] * len(REPORTS))
    input_ids, segment_ids, input_mask, masked_ids, masked_pos, masked_weights = inputs
    masked_logits, masked_loss = original.masked_lm_forward(model, pixel_values, *inputs)
    greedy = original.seq2seq_pipeline(run, "report_generation", "s2s", DOWNSTREAM_IMAGE_TOKENS, GREEDY_STEPS)
    ar_tokens, ar_logits = original.greedy_decode(run, model, greedy, pixel_values, GREEDY_STEPS,
                                                  DOWNSTREAM_IMAGE_TOKENS, MASK)
    tf_tokens, tf_logits, reference, perplexity = original.teacher_forced_decode(
        run, state_dict, pixel_values, REPORTS, DOWNSTREAM_IMAGE_TOKENS, TEACHER_FORCED_TXT_LENGTH, MASK, SEP)
    tensors = {"input_ids": input_ids, "segment_ids": segment_ids, "attention_mask": input_mask,
               "masked_pos": masked_pos, "masked_lm_labels": masked_ids, "masked_weights": masked_weights,
               "masked_lm_logits": masked_logits, "masked_lm_loss": masked_loss,
               "ar_tokens": ar_tokens, "ar_logits": ar_logits, "ar_top2_margin": top2_margin(ar_logits),
               "tf_reference_ids": reference, "tf_tokens": tf_tokens,
               "tf_logits_head": tf_logits[:, :TEACHER_FORCED_LOGIT_STEPS], "tf_max_logits": tf_logits.max(-1).values,
               "tf_perplexity": perplexity, "tf_top2_margin": top2_margin(tf_logits)}
    meta = {"len_vis_input": DOWNSTREAM_IMAGE_TOKENS, "max_len_b": MAX_LEN_B, "reports": REPORTS,
            "ar_steps": GREEDY_STEPS, "ar_tokens": ar_tokens.tolist(),
            "ar_min_top2_margin": float(top2_margin(ar_logits).min()),
            "decode_max_txt_length": TEACHER_FORCED_TXT_LENGTH, "tf_logit_steps": TEACHER_FORCED_LOGIT_STEPS,
            "tf_tokens": tf_tokens.tolist(), "tf_min_top2_margin": float(top2_margin(tf_logits).min())}
    return tensors, meta


def top2_margin(logits):
    top2 = logits.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def retrieval(run, state_dict, pixel_values):
    model = original.retrieval_model(run, state_dict, DOWNSTREAM_IMAGE_TOKENS)
    texts = [RETRIEVAL_TEXTS[text] for _, text in RETRIEVAL_PAIRS]
    image_index = torch.tensor([image for image, _ in RETRIEVAL_PAIRS])
    inputs = original.retrieval_inputs(run, texts, DOWNSTREAM_IMAGE_TOKENS, MAX_LEN_B)
    logits = original.retrieval_forward(model, pixel_values[image_index], inputs)
    _, input_ids, attn_mask, segment, _ = inputs
    tensors = {"input_txt": input_ids, "segment": segment, "attn_mask": attn_mask, "image_index": image_index,
               "itm_logits": logits, "scores": logits.softmax(-1)[:, 1]}
    return tensors, {"num_image_embeds": DOWNSTREAM_IMAGE_TOKENS, "seq_len": MAX_LEN_B, "pairs": RETRIEVAL_PAIRS,
                     "texts": [text.split() for text in RETRIEVAL_TEXTS]}


def classification(run, state_dict, pixel_values):
    model = original.classification_model(run, state_dict, DOWNSTREAM_IMAGE_TOKENS, CLASSIFICATION_LABELS)
    inputs = original.classification_inputs(run, CLASSIFICATION_TEXTS, DOWNSTREAM_IMAGE_TOKENS, CLASSIFICATION_LABELS)
    text, segment, mask = inputs
    tensors = {"input_txt": text, "segment": segment, "attention_mask": mask,
               "logits": original.classification_forward(model, pixel_values, inputs)}
    return tensors, {"n_classes": len(CLASSIFICATION_LABELS), "labels": CLASSIFICATION_LABELS,
                     "num_image_embeds": DOWNSTREAM_IMAGE_TOKENS, "texts": [t.split() for t in CLASSIFICATION_TEXTS]}


def seed_everything(seed=0):
    random.seed(seed)
    torch.manual_seed(seed)
