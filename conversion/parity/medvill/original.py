"""The authors' MedViLL classes and input pipelines, driven by our code (`shims.install` must run first).

One family per process, because their folders reuse module names (`models`, `model`, `image`, `data`):
- `pretraining`: models/MedViLL_origin.py::MedViLL + data/dataset_origin.py::CXRDataset;
- `downstream`: the vendored pytorch_pretrained_bert/model.py::BertForPreTrainingLossMask (VQA, report
  generation) and BertForSeq2SeqDecoder (generation_decode.py's decoder) + data_loader.py's Preprocess4Seq2seq(Decoder);
- `retrieval`: retrieval/model.py::CXRBertForRetrieval + retrieval.py's CXR_Retrieval_Dataset.data_processing;
- `classification`: classification/models/model.py::MultimodalBertClf + data/dataset.py::JsonlDataset + collate_fn.

Every model is built by the authors' constructor, then loads the whole original-layout state dict strictly (only
the `position_ids` buffer transformers 3.5 saved and transformers 5 no longer registers is dropped), in eval mode.
"""

import json
import random
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image
from torch import nn

from shims import WordTokenizer, fixed_randperm
from stand_ins import stub_module

FAMILY_FOLDERS = {"pretraining": ".", "downstream": "downstream_task/report_generation_and_vqa",
                  "retrieval": "downstream_task/retrieval", "classification": "downstream_task/classification"}


def enter_family(original_root, family):
    sys.path.insert(0, str(Path(original_root) / FAMILY_FOLDERS[family]))
    if family == "classification":  # data/helpers.py imports names it never uses from a package it does not ship
        stub_module("pytorch_pretrained_bert", BertTokenizer=None, BertAdam=None)


def load_strictly(model, state_dict):
    """The whole checkpoint, strictly; returns the model in eval mode."""
    wanted = model.state_dict().keys()
    state_dict = {key: value for key, value in state_dict.items() if key in wanted or not key.endswith("position_ids")}
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def blank_image(folder):
    """Their pipelines open an image file; its pixels are replaced by the fixture's `pixel_values`."""
    path = Path(folder) / "blank.png"
    Image.new("L", (64, 64), 128).save(path)
    return str(path)


class Run:
    """What one family needs to know: the BERT config, the fixture's sizes and the vocabulary."""

    def __init__(self, bert_config, image_feature_size, tokens):
        self.bert_config = bert_config
        self.hidden_size = bert_config["hidden_size"]
        self.image_feature_size = image_feature_size
        self.tokenizer = WordTokenizer(tokens)
        self.workdir = tempfile.mkdtemp(prefix="medvill-harness-")
        self.image_path = blank_image(self.workdir)

    def words(self, ids):
        return self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])


# --------------------------------------------------------------------------------------------------
# Pre-training
# --------------------------------------------------------------------------------------------------

PRETRAINING_MASK_FLAGS = {  # main.py flags of each released mask variant
    "bidirectional": dict(Mixed=False, BAR_attn=False, s2s_prob=1.0, bi_prob=0.0),
    "s2s": dict(Mixed=True, BAR_attn=False, s2s_prob=1.0, bi_prob=0.0),
    "bar": dict(Mixed=False, BAR_attn=True, s2s_prob=1.0, bi_prob=0.0),
    "bi_s2s": dict(Mixed=True, BAR_attn=False, s2s_prob=0.75, bi_prob=0.25),
}


def pretraining_model(run, state_dict, num_image_embeds, disturbing_mask=False):
    from models.MedViLL_origin import MedViLL
    from transformers import BertConfig

    args = SimpleNamespace(disturbing_mask=disturbing_mask)
    configs = {"img_encoder": "random-pixel", "num_image_embeds": num_image_embeds, "hidden_size": run.hidden_size}
    model = MedViLL(BertConfig.from_pretrained("bert-base-uncased"), args, configs)
    # ImageBertEmbeddings hard-codes nn.Linear(2048, 768), the released sizes
    model.enc.img_embeddings.img_embeddings = nn.Linear(run.image_feature_size, run.hidden_size)
    return load_strictly(model, state_dict)


def pretraining_dataset(run, mask, seq_len, num_image_embeds, texts, disturbing_mask=False):
    """CXRDataset over a csv of (image, text) rows, with the flags of `mask`."""
    from data.dataset_origin import CXRDataset

    csv = Path(run.workdir) / f"pretraining_{mask}.csv"
    rows = ["image,text"] + [f"\"['{run.image_path}']\",\"['{text}']\"" for text in texts]
    csv.write_text("\n".join(rows) + "\n")
    args = SimpleNamespace(disturbing_mask=disturbing_mask, **PRETRAINING_MASK_FLAGS[mask])
    config = {"seq_len": seq_len, "max_seq_len": 512, "num_image_embeds": num_image_embeds}
    return CXRDataset(str(csv), run.tokenizer, args, config)


def pretraining_batch(dataset, seeds):
    """`dataset[i]` after `random.seed(seeds[i])`, stacked as their DataLoader would."""
    items = []
    for index, seed in enumerate(seeds):
        random.seed(seed)
        items.append(dataset[index])
    return [torch.stack(column) for column in zip(*items)]


def pretraining_forward(model, batch, pixel_values, image_cells, num_cells):
    """(mlm logits (B, T, V), itm logits (B, 2)) with the image sampling fixed to `image_cells` (sorted)."""
    cls_tok, input_ids, _, attn_masks, _, segment, _, sep_tok = batch
    rest = [cell for cell in range(num_cells) if cell not in set(image_cells.tolist())]
    permutation = torch.cat([image_cells, torch.tensor(rest, dtype=torch.long)])
    with torch.no_grad(), fixed_randperm(permutation):
        return model(cls_tok, input_ids, attn_masks, segment, pixel_values, sep_tok)


# --------------------------------------------------------------------------------------------------
# VQA and report generation (vendored pytorch_pretrained_bert)
# --------------------------------------------------------------------------------------------------


def vendored_config(run, task_idx):
    """The repository's config.json format, completed as finetune.py's from_pretrained call does."""
    from pytorch_pretrained_bert.model import BertConfig

    path = Path(run.workdir) / "config.json"
    path.write_text(json.dumps(run.bert_config))
    config = BertConfig.from_json_file(str(path))
    config.fp32_embedding, config.relax_projection, config.label_smoothing, config.task_idx = False, 0, 0, task_idx
    return config


def downstream_args(run, tasks, len_vis_input):
    return SimpleNamespace(tasks=tasks, img_hidden_sz=run.image_feature_size, hidden_size=run.hidden_size,
                           img_postion=True, img_encoding="fully_use_cnn", len_vis_input=len_vis_input,
                           new_segment_ids=False)


def downstream_model(run, tasks, state_dict, len_vis_input, num_answers=None):
    from pytorch_pretrained_bert.model import BertForPreTrainingLossMask

    args = downstream_args(run, tasks, len_vis_input)
    model = BertForPreTrainingLossMask(vendored_config(run, 0 if tasks == "vqa" else 3), args, num_labels=2,
                                       len_vis_input=len_vis_input, tasks=tasks)
    if tasks == "vqa" and num_answers != 458:  # the head hard-codes the 458 VQA-RAD answers
        model.ans_classifier[2] = nn.Linear(2 * run.hidden_size, num_answers)
    return load_strictly(model, state_dict)


def seq2seq_pipeline(run, tasks, mode, len_vis_input, max_len_b, mask_prob=0.15, max_pred=3):
    from data_loader import Preprocess4Seq2seq

    args = downstream_args(run, tasks, len_vis_input)
    return Preprocess4Seq2seq(args, max_pred, mask_prob, list(run.tokenizer.vocab), run.tokenizer.convert_tokens_to_ids,
                              len_vis_input + max_len_b + 3, False, truncate_config={
                                  "max_len_b": max_len_b, "trunc_seg": "b", "always_truncate_tail": False},
                              mode=mode, len_vis_input=len_vis_input)


def seq2seq_inputs(run, pipeline, texts, seeds=None):
    """(input_ids, segment_ids, input_mask, masked_ids, masked_pos, masked_weights) of each text (a word list),
    stacked; `seeds`: random.seed before each item (the masking draws from `random`)."""
    items = []
    for index, words in enumerate(texts):
        if seeds is not None:
            random.seed(seeds[index])
        items.append(pipeline((run.image_path, list(words), None, None, None)))
    columns = list(zip(*items))[:6]
    return [torch.stack(column) if isinstance(column[0], torch.Tensor) else torch.tensor(column) for column in columns]


def capture_output(module):
    """A list that receives `module`'s output at every forward."""
    captured = []
    module.register_forward_hook(lambda _, __, output: captured.append(output))
    return captured


def vqa_forward(model, pixel_values, input_ids, segment_ids, input_mask, ans_labels, ans_type):
    """(logits, loss, accuracy) of finetune.py's VQA step; the logits are caught at `ans_classifier`."""
    captured = capture_output(model.ans_classifier)
    with torch.no_grad():
        _, loss, accuracy, _, _ = model(pixel_values, None, input_ids, segment_ids, input_mask, ans_labels=ans_labels,
                                        ans_type=ans_type)
    return captured[-1], loss, accuracy


def masked_lm_forward(model, pixel_values, input_ids, segment_ids, input_mask, masked_ids, masked_pos, masked_weights):
    """(logits at masked_pos, loss) of finetune.py's report-generation step (drop_worst_ratio 0, as finetune.py)."""
    captured = capture_output(model.cls)
    with torch.no_grad():
        loss, *_ = model(pixel_values, None, input_ids, segment_ids, input_mask, masked_lm_labels=masked_ids,
                         masked_pos=masked_pos, masked_weights=masked_weights, drop_worst_ratio=0)
    return captured[-1][0], loss


def greedy_decode(run, model, pipeline, pixel_values, steps, len_vis_input, mask_id, sep_id=None, pad_id=0):
    """True greedy decoding with their fine-tuning forward: every step re-encodes `[CLS] [UNK]xN [SEP] w_1..w_t
    [MASK]` in Preprocess4Seq2seq's s2s layout and mask (the [MASK] in the final [SEP]'s slot) and appends the
    argmax of the [MASK]'s logits. With `sep_id`, as transformers' generate(): a finished row is fed [PAD] and
    decoding stops once every row has produced [SEP]. Returns (tokens (B, steps'), logits (B, steps', V))."""
    generated = [[] for _ in range(pixel_values.shape[0])]
    finished = torch.zeros(pixel_values.shape[0], dtype=torch.bool)
    all_logits = []
    for _ in range(steps):
        texts = [run.words(row) for row in generated]
        input_ids, segment_ids, input_mask, *_ = seq2seq_inputs(run, pipeline, texts, seeds=[0] * len(texts))
        end = [len_vis_input + 2 + len(row) for row in generated]  # the final [SEP] slot
        input_ids = input_ids.clone()
        for row, words in enumerate(generated):
            input_ids[row, len_vis_input + 2: end[row]] = torch.tensor(words, dtype=torch.long)
            input_ids[row, end[row]] = mask_id
        masked_pos = torch.tensor(end)[:, None]
        logits, _ = masked_lm_forward(model, pixel_values, input_ids, segment_ids, input_mask,
                                      torch.zeros_like(masked_pos), masked_pos, torch.ones_like(masked_pos))
        logits = logits[:, 0]
        tokens = logits.argmax(-1)
        if sep_id is not None:
            tokens = torch.where(finished, pad_id, tokens)
            finished |= tokens == sep_id
        all_logits.append(logits)
        for row, token in enumerate(tokens.tolist()):
            generated[row].append(token)
        if sep_id is not None and bool(finished.all()):
            break
    return torch.tensor(generated), torch.stack(all_logits, 1)


def teacher_forced_decode(run, state_dict, pixel_values, reports, len_vis_input, max_txt_length, mask_id, sep_id):
    """generation_decode.py's greedy loop (BertForSeq2SeqDecoder, beam 1, weights renamed as that script does).
    Returns (tokens, logits (B, steps, V), reference ids (B, max_txt_length), perplexity)."""
    from data_loader import Preprocess4Seq2seqDecoder
    from pytorch_pretrained_bert.model import BertForSeq2SeqDecoder

    args = downstream_args(run, "report_generation", len_vis_input)
    model = BertForSeq2SeqDecoder(vendored_config(run, 3), args, mask_word_id=mask_id, num_labels=2,
                                  search_beam_size=1, length_penalty=0, eos_id=sep_id, forbid_duplicate_ngrams=False,
                                  forbid_ignore_set=None, ngram_size=3, min_len=None, len_vis_input=len_vis_input)
    renamed = {}
    for key, value in state_dict.items():
        key = (key.replace("txt_embeddings", "bert.txt_embeddings").replace("img_embeddings", "bert.img_embeddings")
               .replace("img_encoder.model", "bert.img_encoder.model").replace("encoder.layer", "bert.encoder.layer")
               .replace("pooler", "bert.pooler"))
        renamed[key.replace("bert.img_embeddings.bert.img_embeddings", "bert.img_embeddings.img_embeddings")] = value
    model = load_strictly(model, renamed)
    pipeline = Preprocess4Seq2seqDecoder(run.tokenizer, max_txt_length + len_vis_input + 3, max_txt_length=max_txt_length,
                                         mode="s2s", len_vis_input=len_vis_input)
    items = [pipeline((run.image_path, len_vis_input, " ".join(words))) for words in reports]
    input_ids, segment_ids, position_ids, input_mask, _, _, _, reference = [
        torch.stack(column) if isinstance(column[0], torch.Tensor) else torch.tensor(column) for column in zip(*items)]
    # The loop reads gt_token[start_pos - 258] (258 = len_vis_input + 2 of the released model). Padded to length
    # 258 - (len_vis_input + 2), that index, negative for a smaller len_vis_input, lands on
    # gt_token[start_pos - (len_vis_input + 2)], the released model's behaviour (no-op at the released size).
    gt_token = torch.nn.functional.pad(reference, (0, max(0, 258 - (len_vis_input + 2) - reference.shape[1])))
    with torch.no_grad():
        tokens, _, logits = model(pixel_values, None, input_ids, segment_ids, position_ids, input_mask, gt_token,
                                  "cpu", task_idx=3)
    perplexity = torch.exp(nn.CrossEntropyLoss(ignore_index=0)(logits.transpose(1, 2).float(), reference))
    return tokens, logits, reference, perplexity


# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------


def retrieval_model(run, state_dict, num_image_embeds):
    from model import CXRBertForRetrieval
    from transformers import BertConfig

    args = retrieval_args(run, num_image_embeds, seq_len=None)
    return load_strictly(CXRBertForRetrieval(BertConfig.from_pretrained("bert-base-uncased"), args), state_dict)


def retrieval_args(run, num_image_embeds, seq_len):
    return SimpleNamespace(weight_load=False, img_hidden_sz=run.image_feature_size, embedding_size=run.hidden_size,
                           hidden_size=run.hidden_size, dropout_prob=0.1, img_postion=True, img_encoder="full-fiber",
                           num_image_embeds=num_image_embeds, img_channel=3, seq_len=seq_len)


def retrieval_inputs(run, texts, num_image_embeds, seq_len):
    """retrieval.py's data_processing of each text (a word string): cls_tok, input_ids, attn_masks, segment, sep_tok."""
    import torchvision.transforms as transforms
    from retrieval import CXR_Retrieval_Dataset

    dataset = SimpleNamespace(args=retrieval_args(run, num_image_embeds, seq_len), data_dir=run.workdir,
                              tokenizer=run.tokenizer, seq_len=seq_len, vocab_stoi=run.tokenizer.vocab,
                              transforms=transforms.Compose([transforms.ToTensor()]))
    items = [CXR_Retrieval_Dataset.data_processing(dataset, text, run.image_path) for text in texts]
    cls_tok, input_ids, attn_masks, _, segment, sep_tok = [torch.stack(column) for column in zip(*items)]
    return cls_tok, input_ids, attn_masks, segment, sep_tok


def retrieval_forward(model, pixel_values, inputs):
    cls_tok, input_ids, attn_masks, segment, sep_tok = inputs
    with torch.no_grad():
        return model(cls_tok, input_ids, attn_masks, segment, pixel_values, sep_tok)


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------


def classification_args(run, num_image_embeds, labels):
    vocab = SimpleNamespace(stoi=run.tokenizer.vocab, itos=run.tokenizer.ids_to_tokens)
    return SimpleNamespace(init_model="bert-base-scratch", img_hidden_sz=run.image_feature_size,
                           hidden_sz=run.hidden_size, dropout=0.1, num_image_embeds=num_image_embeds,
                           img_embed_pool_type="avg", n_classes=len(labels), labels=list(labels), vocab=vocab,
                           drop_img_percent=0.0, max_seq_len=512, task_type="multilabel")


def classification_model(run, state_dict, num_image_embeds, labels):
    from models.model import MultimodalBertClf

    return load_strictly(MultimodalBertClf(classification_args(run, num_image_embeds, labels)), state_dict)


def classification_inputs(run, texts, num_image_embeds, labels):
    """JsonlDataset items of each text (a word string) through cls.py's collate_fn: text, segment, mask."""
    import torchvision.transforms as transforms
    from data.dataset import JsonlDataset
    from data.helpers import collate_fn

    args = classification_args(run, num_image_embeds, labels)
    jsonl = Path(run.workdir) / "classification.jsonl"
    jsonl.write_text("".join(json.dumps({"text": text, "label": labels[0], "img": Path(run.image_path).name}) + "\n"
                             for text in texts))
    dataset = JsonlDataset(str(jsonl), run.tokenizer, transforms.Compose([transforms.ToTensor()]), args.vocab, args)
    text, segment, mask, _, _ = collate_fn([dataset[i] for i in range(len(texts))], args)
    return text, segment, mask


def classification_forward(model, pixel_values, inputs):
    text, segment, mask = inputs
    with torch.no_grad():
        return model(text, mask, segment, pixel_values)
