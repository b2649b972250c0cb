"""The authors' MISS classes, driven by our code (`shims.prepare()` and `enter()` first).

Models are built by their constructors (`models/miss_pretrain.py::MISS_Pretrain`, `models/miss_vqa.py::MISS_VQA`) from a
BERT config file of the fixture's sizes, load the whole original-layout state dict strictly, and run in eval mode
(dropout off; their pre-training forward still updates the momentum encoders and the queues, as it always does). Their
forwards take raw text and tokenise it themselves; what they compute inside is read back from their own local variables
when the function returns (`harness_common.captured_locals`), never recomputed here.
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import torch

import shims
from harness_common import captured_locals

VIT_B_16 = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
            "patch_size": 16}  # create_vit('base')


def enter(original_root, vocab_dir, vision=None):
    """Put their repository on `sys.path` and apply the patches that need it (`shims.configure`)."""
    sys.path.insert(0, str(Path(original_root)))
    shims.configure(vocab_dir, vision)


def write_bert_configs(folder, text_config):
    """Their two BERT config files for a medvlp-hf `text_config`: `bert_config.json` (pre-training: the WordPiece
    vocabulary, which their code resizes to + [DEC] + [ENC]) and `med_config.json` (VQA: the resized vocabulary)."""
    folder = Path(folder)
    names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings",
             "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps", "pad_token_id")
    base = {"architectures": ["BertModel"], "model_type": "bert", "add_cross_attention": True, "type_vocab_size": 2,
            "initializer_range": 0.02, "encoder_width": text_config.encoder_hidden_size,
            **{name: getattr(text_config, name) for name in names}}
    paths = {"pretraining": folder / "bert_config.json", "vqa": folder / "med_config.json"}
    paths["pretraining"].write_text(json.dumps({**base, "vocab_size": text_config.vocab_size - 2}, indent=1))
    paths["vqa"].write_text(json.dumps({**base, "vocab_size": text_config.vocab_size}, indent=1))
    return paths


def vit_sizes(vision_config):
    """The ViT sizes `enter` needs when the model is not their ViT-B/16 (None when it is)."""
    names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size")
    sizes = {name: getattr(vision_config, name) for name in names}
    return None if sizes == VIT_B_16 else sizes


def model_for(kind, head, state_dict, config, workdir):
    """The authors' model that a `kind` checkpoint becomes as `head` (the converted model's `config` gives the
    sizes): MISS_Pretrain, MISS_VQA, or MISS_VQA initialised from the pre-training checkpoint by their
    `load_checkpoint` (the file it reads is written to `workdir` as their training script saves it)."""
    files = write_bert_configs(workdir, config.text_config)
    image_size = config.vision_config.image_size
    if kind == "pretraining" and head == "pretraining":
        return pretraining_model(files["pretraining"], state_dict, image_size, config.projection_dim, config.queue_size)
    if kind == "vqa":
        return vqa_model(files["vqa"], state_dict, image_size)
    path = Path(workdir) / "checkpoint_pretraining.pth"
    torch.save({"model": state_dict, "epoch": 0}, path)
    model, message = vqa_model_from_pretraining(files["vqa"], path, image_size)
    if message.missing_keys:
        raise AssertionError(f"their load_checkpoint left {message.missing_keys} uninitialised")
    return model


def load_strictly(model, state_dict):
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def pretraining_model(config_file, state_dict, image_size, projection_dim, queue_size):
    from models.miss_pretrain import MISS_Pretrain

    with contextlib.redirect_stdout(io.StringIO()):  # tie_encoder_decoder_weights prints every tied module
        model = MISS_Pretrain(med_config=str(config_file), image_size=image_size, vit="base", embed_dim=projection_dim,
                              queue_size=queue_size)
    return load_strictly(model, state_dict)


def vqa_model(config_file, state_dict, image_size):
    from models.miss_vqa import MISS_VQA

    return load_strictly(MISS_VQA(med_config=str(config_file), image_size=image_size, vit="base"), state_dict)


def vqa_model_from_pretraining(config_file, checkpoint_file, image_size):
    """`miss_vqa(pretrained=...)`: MISS_VQA initialised from a pre-training checkpoint file by their
    `load_checkpoint` (position embeddings interpolated, keys of other shapes dropped, strict=False). Returns the model
    and the keys it did not find (`msg.missing_keys`; must be none) and ignored."""
    from models.miss_vqa import miss_vqa

    from models.miss import load_checkpoint

    model = miss_vqa(med_config=str(config_file), image_size=image_size, vit="base")
    with contextlib.redirect_stdout(io.StringIO()):  # "reshape position embedding ..."
        _, message = load_checkpoint(model, str(checkpoint_file))
    return model.eval(), message


# --------------------------------------------------------------------------------------------------
# Replacing their draws
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fixed_multinomial(indices):
    """`torch.multinomial(weights, 1)` returns `indices` one call after another (their ITM draws one hard negative per
    call: an image for each text, then a text for each image); each must have a positive weight."""
    original, remaining = torch.multinomial, list(indices)

    def draw(weights, num_samples, *args, **kwargs):
        index = remaining.pop(0)
        if num_samples != 1 or not weights[index] > 0:
            raise AssertionError(f"injected hard negative {index} has weight {float(weights[index])} in {weights}")
        return torch.tensor([index])

    torch.multinomial = draw
    try:
        yield
    finally:
        torch.multinomial = original
    if remaining:
        raise AssertionError(f"{len(remaining)} injected hard negatives were not drawn")


# --------------------------------------------------------------------------------------------------
# Forwards
# --------------------------------------------------------------------------------------------------


def pretraining_forward(model, pixel_values, captions, alpha, negative_images, negative_texts):
    """One `MISS_Pretrain.forward(image, caption, alpha)` with the given hard negatives. Returns its locals: the
    losses, `text` (their tokenisation), `sim_i2t`/`sim_t2i` (ITC logits over batch + queue), `vl_output` (ITM logits)
    and `decoder_output` (LM)."""
    from models.miss_pretrain import MISS_Pretrain

    names = ("text", "sim_i2t", "sim_t2i", "vl_output", "decoder_output", "loss_ita", "loss_itm", "loss_lm")
    with captured_locals({MISS_Pretrain.forward: names}) as calls, torch.no_grad():
        with fixed_multinomial([*negative_images.tolist(), *negative_texts.tolist()]):
            model(pixel_values, captions, alpha)
    return calls[MISS_Pretrain.forward.__qualname__][0]


def vqa_training_forward(model, pixel_values, questions, answers):
    """`MISS_VQA.forward(..., train=True, n=[1] * B)` (one answer per question, as train_rad.py passes): its
    `question`/`answer` tokenisation, `answer_output` (decoder logits) and `loss`."""
    from models.miss_vqa import MISS_VQA

    names = ("question", "answer", "answer_output", "loss")
    with captured_locals({MISS_VQA.forward: names}) as calls, torch.no_grad():
        model(pixel_values, questions, answers, train=True, n=[1] * len(questions))
    return calls[MISS_VQA.forward.__qualname__][0]


def vqa_generate(model, pixel_values, questions):
    """`MISS_VQA.forward(..., train=False, inference='generate')`: their beam search (3 beams, max_length 10). Their
    `text_decoder.generate` call also returns the beam scores (`output_scores`) to us and the sequences to them.
    Returns (decoded answers, their `question` tokenisation, the generate output)."""
    from models.miss_vqa import MISS_VQA

    decoder, outputs = model.text_decoder, []
    generate = decoder.generate

    def generate_with_scores(*args, **kwargs):
        outputs.append(generate(*args, **kwargs, output_scores=True, return_dict_in_generate=True))
        return outputs[-1].sequences

    decoder.generate = generate_with_scores
    try:
        with captured_locals({MISS_VQA.forward: ("question",)}) as calls, torch.no_grad():
            answers = model(pixel_values, questions, train=False, inference="generate")
    finally:
        del decoder.generate
    return answers, calls[MISS_VQA.forward.__qualname__][0]["question"], outputs[0]


def vqa_rank(model, pixel_values, questions, candidates, k):
    """`MISS_VQA.forward(..., train=False, inference='rank', k_test=k)` over `candidates` tokenised as BLIP's VQA does
    before ranking (the release's forward expects them tokenised: `[DEC]` first, right-padded). Returns the chosen
    candidates (`max_ids`), their `question` tokenisation, `rank_answer`'s `prob_first_token`, `topk_ids` and
    `log_probs_sum` (per question, the label-smoothed log-likelihood of each top-k candidate), and the candidates'
    tokenisation."""
    from models.miss_vqa import MISS_VQA

    answer = model.tokenizer(candidates, padding="longest", return_tensors="pt")
    answer.input_ids[:, 0] = model.tokenizer.bos_token_id
    names = {MISS_VQA.forward: ("question",), MISS_VQA.rank_answer: ("prob_first_token", "topk_ids", "log_probs_sum")}
    with captured_locals(names) as calls, torch.no_grad():
        chosen = model(pixel_values, questions, answer, train=False, inference="rank", k_test=k)
    question = calls[MISS_VQA.forward.__qualname__][0]["question"]
    return chosen, question, calls[MISS_VQA.rank_answer.__qualname__][0], answer
