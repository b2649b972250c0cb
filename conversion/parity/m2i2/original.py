"""The authors' M2I2 classes, driven by our code (`shims.prepare()` and `enter()` first).

Models are built by their constructors (`models/model_pretrain.py::M2I2`, `models/model_vqa.py::M2I2`) from a BERT
config file of the fixture's sizes, load the whole original-layout state dict strictly, and run in eval mode (dropout
off; their pre-training forward, and their VQA training forward with `distill`, still update the momentum encoders, as
they always do). A VQA model initialised from a pre-training checkpoint is initialised by `train_rad.py`'s own loading
code, run from their file. Their forwards tokenise raw text themselves, with their tokenizer; what they compute inside
is read back from their own local variables when the function returns (`harness_common.captured_locals`), never
recomputed here.
Their random draws (image masks, MLM masks and random words, ITM hard negatives) are replaced, call by call, by the
record's (`injected_draws`).
"""

import ast
import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

import shims
from harness_common import captured_locals

VIT_B_16 = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
            "patch_size": 16, "mim_hidden_size": 512, "mim_num_hidden_layers": 8, "mim_num_attention_heads": 16}
# train_rad.py maps text layers >= 6 to decoder layers 0.. (`layer_num < 6`, `layer_num - 6`)
TRAIN_RAD_FUSION_LAYER = 6


def enter(original_root, vision=None):
    """Put their repository on `sys.path` and apply the patches that need it (`shims.configure`)."""
    sys.path.insert(0, str(Path(original_root)))
    shims.configure(vision)


def vision_sizes(config):
    """The ViT (and MAE decoder) sizes `enter` needs when the model is not their ViT-B/16 (None when it is)."""
    vision, decoder = config.vision_config, config.mim_decoder_config
    sizes = {name: getattr(vision, name) for name in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                       "num_attention_heads", "patch_size")}
    sizes.update(mim_hidden_size=decoder.hidden_size, mim_num_hidden_layers=decoder.num_hidden_layers,
                 mim_num_attention_heads=decoder.num_attention_heads)
    return None if sizes == VIT_B_16 else sizes


def write_bert_config(folder, text_config):
    """Their `configs/config_bert.json` for a medvlp-hf `text_config`."""
    names = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size", "hidden_act", "hidden_dropout_prob",
             "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range", "pad_token_id", "fusion_layer")
    config = {"architectures": ["BertForMaskedLM"], "model_type": "bert",
              "encoder_width": text_config.encoder_hidden_size, **{name: getattr(text_config, name) for name in names}}
    path = Path(folder) / "config_bert.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def tokenizer(vocab_file):
    """Their tokenizer (`models/tokenization_bert.py`, ALBEF's: `[CLS] text` without a closing `[SEP]`)."""
    from models.tokenization_bert import BertTokenizer

    return BertTokenizer(str(vocab_file))


def model_for(kind, head, distill, config, state_dict, vocab_file, workdir):
    """Their model that a `kind` checkpoint becomes as `head` (the converted model's `config` gives the sizes; `distill`
    for VQA), holding the checkpoint's weights: `model_pretrain.M2I2`, `model_vqa.M2I2`, or `model_vqa.M2I2`
    initialised from the pre-training checkpoint by train_rad.py's code (which must leave no weight uninitialised)."""
    bert_file = write_bert_config(workdir, config.text_config)
    if kind == "pretraining" and head == "pretraining":
        return pretraining_model(bert_file, vocab_file, state_dict, config)
    if kind == "vqa":
        return load_strictly(vqa_model(bert_file, vocab_file, config, distill), state_dict)
    model, message = vqa_model_from_pretraining(bert_file, vocab_file, config, distill, state_dict, workdir)
    if message.missing_keys:
        raise AssertionError(f"train_rad.py's loading left {message.missing_keys} uninitialised")
    return model


def load_strictly(model, state_dict):
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def pretraining_model(bert_config_file, vocab_file, state_dict, config):
    """`model_pretrain.M2I2` with configs/Pretrain.yaml's settings at the converted model's sizes (`config`)."""
    from models.model_pretrain import M2I2

    settings = {"mlm_probability": config.mlm_probability, "embed_dim": config.projection_dim,
                "image_res": config.vision_config.image_size, "vision_width": config.vision_config.hidden_size,
                "bert_config": str(bert_config_file), "temp": config.itc_temperature, "queue_size": config.queue_size,
                "momentum": config.momentum}
    model = M2I2(text_encoder="bert-base-uncased", tokenizer=tokenizer(vocab_file), config=settings, init_deit=False)
    return load_strictly(model, state_dict)


def vqa_model(bert_config_file, vocab_file, config, distill):
    """`model_vqa.M2I2` (configs/RAD.yaml settings) at the converted model's sizes, with its initial weights. Its
    answer decoder hard-codes `num_hidden_layers = 6` (the fusion layers of BERT-base); at other depths it is rebuilt,
    with their class, as deep as the fusion layers (`num_hidden_layers - fusion_layer`), before any weight loads."""
    from models.model_vqa import M2I2
    from models.xbert import BertConfig, BertLMHeadModel

    settings = {"distill": distill, "image_res": config.vision_config.image_size, "bert_config": str(bert_config_file)}
    model = M2I2(text_encoder="bert-base-uncased", text_decoder="bert-base-uncased", tokenizer=tokenizer(vocab_file),
                 config=settings)
    depth = config.text_config.num_fusion_layers
    if depth != model.text_decoder.config.num_hidden_layers:
        decoder_config = BertConfig.from_json_file(str(bert_config_file))
        decoder_config.fusion_layer, decoder_config.num_hidden_layers = 0, depth
        model.text_decoder = BertLMHeadModel(decoder_config)
        if distill:
            model.text_decoder_m = BertLMHeadModel(decoder_config)
            model.model_pairs = [[model.visual_encoder, model.visual_encoder_m],
                                 [model.text_encoder, model.text_encoder_m], [model.text_decoder, model.text_decoder_m]]
            model.copy_params()
    return model.eval()


def vqa_model_from_pretraining(bert_config_file, vocab_file, config, distill, pretraining_state, workdir):
    """`model_vqa.M2I2` initialised from a pre-training checkpoint as `train_rad.py` does: its `if args.checkpoint:`
    block (position tables interpolated, keys renamed, the fusion layers copied into the decoder, `strict=False`) runs
    from their file, on the checkpoint file their pre-training script would write. The block hard-codes BERT-base's
    fusion layer 6 (`layer_num < 6`, `layer_num - 6`); at another fusion layer those two constants, and only those, are
    replaced by it. Returns the model and their load message (missing / unexpected keys)."""
    from models.vit import interpolate_pos_embed

    model = vqa_model(bert_config_file, vocab_file, config, distill)
    path = Path(workdir) / "med_pretrain_00.pth"
    torch.save({"model": pretraining_state, "epoch": 0}, path)
    namespace = {"args": SimpleNamespace(checkpoint=str(path), evaluate=False), "config": {"distill": distill},
                 "model": model, "torch": torch, "interpolate_pos_embed": interpolate_pos_embed}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(train_rad_loading_code(config.text_config.fusion_layer), namespace)
    if "load checkpoint from" not in printed.getvalue():
        raise AssertionError(f"train_rad.py's loading block did not run to its end: {printed.getvalue()}")
    return model.eval(), namespace["msg"]


def train_rad_loading_code(fusion_layer):
    """train_rad.py's `if args.checkpoint:` block of `main`, compiled (their file is read where `enter` put it)."""
    path = Path(sys.modules["models.model_vqa"].__file__).parents[1] / "train_rad.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    block = next(node for node in main.body if isinstance(node, ast.If) and ast.unparse(node.test) == "args.checkpoint")
    replaced = 0
    for node in ast.walk(block):
        operands = []
        if isinstance(node, ast.Compare) and ast.unparse(node.left) == "layer_num" and len(node.comparators) == 1:
            operands = [(node.comparators, 0)]
        elif isinstance(node, ast.BinOp) and ast.unparse(node.left) == "layer_num" and isinstance(node.op, ast.Sub):
            operands = [(node, "right")]
        for owner, slot in operands:
            constant = owner[slot] if isinstance(owner, list) else getattr(owner, slot)
            if isinstance(constant, ast.Constant) and constant.value == TRAIN_RAD_FUSION_LAYER:
                constant.value = fusion_layer
                replaced += 1
    if replaced != 2:
        raise AssertionError(f"expected train_rad.py's two fusion-layer constants, found {replaced}")
    module = ast.Module(body=[block], type_ignores=[])
    return compile(ast.fix_missing_locations(module), str(path), "exec")


# --------------------------------------------------------------------------------------------------
# Replacing their draws
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def injected_draws(rand=(), bernoulli=(), randint=(), multinomial=()):
    """`torch.rand`, `torch.bernoulli`, `torch.randint` and `torch.multinomial` return the given values one call after
    another (each checked against the call's shape, or, for `multinomial(weights, 1)`, to have a positive weight);
    every value must be drawn."""
    queues = {"rand": list(rand), "bernoulli": list(bernoulli), "randint": list(randint),
              "multinomial": list(multinomial)}
    originals = {name: getattr(torch, name) for name in queues}

    def take(name, shape):
        if not queues[name]:
            raise AssertionError(f"their code called torch.{name} more often than the record has draws")
        value = queues[name].pop(0)
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise AssertionError(f"torch.{name} of shape {tuple(shape)} got an injected draw of shape "
                                 f"{tuple(value.shape)}")
        return value.clone()

    def multinomial_draw(weights, num_samples, *args, **kwargs):
        index = int(take("multinomial", None))
        if num_samples != 1 or not weights[index] > 0:
            raise AssertionError(f"injected hard negative {index} has weight {float(weights[index])} in {weights}")
        return torch.tensor([index])

    torch.rand = lambda *size, **kwargs: take("rand", size[0] if len(size) == 1 else size)
    torch.bernoulli = lambda probabilities, *args, **kwargs: take("bernoulli", probabilities.shape).to(
        probabilities.dtype)
    torch.randint = lambda high, size, **kwargs: take("randint", size).to(kwargs.get("dtype", torch.long))
    torch.multinomial = multinomial_draw
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(torch, name, function)
    left = {name: len(queue) for name, queue in queues.items() if queue}
    if left:
        raise AssertionError(f"injected draws were not used: {left}")


# --------------------------------------------------------------------------------------------------
# Forwards
# --------------------------------------------------------------------------------------------------


def pretraining_forward(model, pixel_values, captions, alpha, draws):
    """One `M2I2.forward(image, text, alpha)` with `draws` (`mlm_draws`, the three image masks' noise and the hard
    negatives) injected, on `captions` tokenised as `pretrain_med.py` does. Returns its locals (`text`, the ITC logits
    `sim_i2t`/`sim_t2i`, the ITM logits `vl_output`, `mlm_output`, the masked `input_ids` and `labels`, the four
    losses) and the locals of their three `MaskedAutoencoderViT.forward` calls (online ViT, momentum ViT, MIM)."""
    from models.mae import MaskedAutoencoderViT
    from models.model_pretrain import M2I2

    text = model.tokenizer(captions, padding="longest", truncation=True, max_length=25, return_tensors="pt")
    names = {M2I2.forward: ("sim_i2t", "sim_t2i", "vl_output", "mlm_output", "input_ids", "labels", "loss_ita",
                            "loss_itm", "loss_mlm", "loss_mim"),
             MaskedAutoencoderViT.forward: ("loss", "pred", "mask", "latent")}
    with captured_locals(names) as calls, torch.no_grad():
        with injected_draws(**draws):
            model(pixel_values, text, alpha=alpha)
    forward = calls[M2I2.forward.__qualname__][0]
    return {**forward, "text": text, "vit_calls": calls[MaskedAutoencoderViT.forward.__qualname__]}


def mlm_draws(targets, masked_ids, mask_token_id):
    """What their `M2I2.mask` draws so that it masks `targets` (B, L bools) into `masked_ids`: the targets
    (`bernoulli(probability_matrix)`), the [MASK] replacements (`bernoulli(0.8)`), the random-word replacements
    (`bernoulli(0.5)`) and the random words (`randint(vocab_size, shape)`)."""
    replaced = targets & (masked_ids == mask_token_id)
    return [targets.float(), replaced.float(), (targets & ~replaced).float()], [masked_ids]


def vqa_training_forward(model, pixel_values, questions, answers, weights, alpha):
    """`M2I2.forward(..., train=True, alpha, k=[1] * B, weights)` with questions and answers tokenised as
    `train_rad.py` does. Returns its locals: `quesiton` (sic) and `answer` (their tokenisation), `answer_output`
    (decoder logits) and `loss`."""
    from models.model_vqa import M2I2

    question = model.tokenizer(questions, padding="longest", truncation=True, max_length=25, return_tensors="pt")
    answer = model.tokenizer(answers, padding="longest", return_tensors="pt")
    names = ("quesiton", "answer", "answer_output", "loss")
    with captured_locals({M2I2.forward: names}) as calls, torch.no_grad():
        model(pixel_values, question, answer, train=True, alpha=alpha, k=[1] * len(questions), weights=weights)
    return calls[M2I2.forward.__qualname__][0]


def vqa_rank(model, pixel_values, questions, candidates, k):
    """`M2I2.forward(..., train=False, k=k)` as `train_rad.py`'s evaluation runs it (candidates + '[SEP]' tokenised
    together, questions untruncated), and the answer it picks for each question (`topk_prob.max(dim=0)`). Returns the
    chosen candidate indices, `rank_answer`'s locals (`log_probs_sum` per question over the top k in first-token order,
    `rerank_id`, the re-ranked `topk_ids` and `topk_probs`) and their tokenisation of questions and candidates."""
    from models.model_vqa import M2I2

    question = model.tokenizer(questions, padding="longest", return_tensors="pt")
    answer = model.tokenizer(candidates, padding="longest", return_tensors="pt")
    names = {M2I2.rank_answer: ("log_probs_sum", "rerank_id", "topk_ids", "topk_probs")}
    with captured_locals(names) as calls, torch.no_grad():
        topk_ids, topk_probs = model(pixel_values, question, answer, train=False, k=k)
    chosen = torch.stack([topk_id[topk_prob.max(dim=0)[1]] for topk_id, topk_prob in zip(topk_ids, topk_probs)])
    return chosen, calls[M2I2.rank_answer.__qualname__][0], question, answer
