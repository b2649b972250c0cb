"""Run-time patches that let the authors' MISS code (TIMMY-CHAN/MISS@ac8b724) run here: CPU only, offline,
transformers 5.x, any model size. No file of their repository is edited; every patch is applied in this process
before (`prepare`) or right after (`configure`) their modules are imported.

1. torchvision (which timm 0.4.12 imports): the `torchvision::nms` operator schemas are defined before torchvision
   loads (the registry's only torchvision 0.28.0 is a CUDA build whose extension needs them,
   ../shared/reference/originals.md §1.1).
2. Downloads and unused imports: `fairscale`'s `checkpoint_wrapper` (imported by vit.py, used only with gradient
   checkpointing) is stubbed; `torch.hub.load_state_dict_from_url` (MISS_Pretrain downloads DeiT weights and never
   loads them, originals.md §4.12) returns `{"model": {}}`; `BertTokenizer.from_pretrained` of the author's disk path
   (`/home/cjw/demo/bert-base-uncased`) reads the given vocabulary folder; `BertModel/BertLMHeadModel.from_pretrained(
   'bert-base-uncased', config=...)` builds the model from the config (the weights are loaded afterwards).
3. transformers 5 removed what their BLIP `med.py` uses (originals.md §1.3): `apply_chunking_to_forward`,
   `find_pruneable_heads_and_indices`, `prune_linear_layer` in `transformers.modeling_utils` (1);
   `invert_attention_mask` and `get_head_mask` (2, with the -10000 of the transformers version they pin);
   `init_weights` as transformers 4 ran it (3: initialise, tie the LM head to the word embeddings);
   `resize_token_embeddings` that also pads the tied LM-head bias (4); `additional_special_tokens_ids` of tokenizers
   (5); `generate()` on their `BertLMHeadModel` (8: GenerationMixin grafted on; its beam expansion leaves
   `encoder_hidden_states`/`encoder_attention_mask` as the callers already repeated them). Their
   `prepare_inputs_for_generation(input_ids, past=None, ...)` never receives a cache from transformers 5's
   `generate`, so their decoder re-runs the whole answer at every step (correct, slower).
4. A ViT other than ViT-B/16 (the tiny fixtures): `create_vit(vit='base', ...)` builds their `VisionTransformer` at the
   given sizes (`configure(vision=...)`); the released geometry keeps their ViT-B/16.
"""

import torch
from torch import nn

from harness_common import build_bert_offline, restore_bert_helpers
from stand_ins import define_torchvision_operator_schemas, stub_module

AUTHOR_TOKENIZER_PATH = "/home/cjw/demo/bert-base-uncased"  # hard-coded in models/miss.py:init_tokenizer


def prepare():
    """Patches that do not depend on their code or the model size (1, 2 without the tokenizer): run before anything
    imports torchvision or timm."""
    if getattr(prepare, "done", False):
        return
    library = define_torchvision_operator_schemas()
    stub_module("fairscale")
    stub_module("fairscale.nn")
    stub_module("fairscale.nn.checkpoint")
    stub_module("fairscale.nn.checkpoint.checkpoint_activations", checkpoint_wrapper=_no_checkpoint_wrapper)
    torch.hub.load_state_dict_from_url = lambda *args, **kwargs: {"model": {}}
    _patch_transformers()
    prepare.library, prepare.done = library, True  # keep the schemas registered


def configure(vocab_dir, vision=None):
    """After `sys.path` holds their repository: the tokenizer path (2), their `med.py` classes (2, 3), and, with
    `vision` ({"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size"}), the
    ViT sizes (4)."""
    _patch_tokenizer(str(vocab_dir))
    _patch_med()
    if vision is not None:
        _patch_create_vit(vision)


def _no_checkpoint_wrapper(module, *args, **kwargs):
    raise NotImplementedError("fairscale is stubbed: the harness never enables vit_grad_ckpt")


def _patch_transformers():
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    restore_bert_helpers()
    PreTrainedTokenizerBase.additional_special_tokens_ids = property(
        lambda self: self.convert_tokens_to_ids(list(self.extra_special_tokens)))


def _patch_tokenizer(vocab_dir):
    from transformers import BertTokenizer

    from_pretrained = BertTokenizer.from_pretrained.__func__

    def redirected(cls, path, *args, **kwargs):
        return from_pretrained(cls, vocab_dir if path == AUTHOR_TOKENIZER_PATH else path, *args, **kwargs)

    BertTokenizer.from_pretrained = classmethod(redirected)


def _patch_med():
    from transformers import GenerationConfig, GenerationMixin

    from models import med

    build_bert_offline(med.BertPreTrainedModel)
    med.BertPreTrainedModel.resize_token_embeddings = _resize_token_embeddings
    decoder = med.BertLMHeadModel
    if GenerationMixin not in decoder.__bases__:
        decoder.__bases__ = (*decoder.__bases__, GenerationMixin)
        decoder._expand_inputs_for_generation = staticmethod(_expand_all_but_encoder_states)
        decoder_init = decoder.__init__

        def init_with_generation_config(self, config, *args, **kwargs):
            decoder_init(self, config, *args, **kwargs)
            self.generation_config = GenerationConfig.from_model_config(config)

        decoder.__init__ = init_with_generation_config


def _resize_token_embeddings(self, new_num_tokens):
    """transformers 4's resize: a longer word table keeping the old rows, and a tied LM head whose bias grows too."""
    old = self.get_input_embeddings()
    new = nn.Embedding(new_num_tokens, old.embedding_dim, padding_idx=old.padding_idx)
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
    self.set_input_embeddings(new)
    output = self.get_output_embeddings()
    if output is not None:
        output.weight = new.weight
        predictions = self.cls.predictions
        predictions.bias = nn.Parameter(torch.cat([predictions.bias.data,
                                                   predictions.bias.new_zeros(new_num_tokens - old.num_embeddings)]))
        predictions.decoder.bias = predictions.bias
        output.out_features = new_num_tokens
    self.config.vocab_size = new_num_tokens
    return new


def _expand_all_but_encoder_states(expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
    """GenerationMixin's beam expansion, except for the states their callers repeat per beam themselves."""
    kept = {name: model_kwargs.pop(name) for name in ("encoder_hidden_states", "encoder_attention_mask")
            if name in model_kwargs}
    if input_ids is not None:
        input_ids = input_ids.repeat_interleave(expand_size, dim=0)
    for name, value in model_kwargs.items():
        if isinstance(value, torch.Tensor):
            model_kwargs[name] = value.repeat_interleave(expand_size, dim=0)
    return input_ids, {**model_kwargs, **kept}


def _patch_create_vit(vision):
    """create_vit('base', image_size, ..., drop_path_rate) at the given sizes, in every module that imported it."""
    from models import miss, miss_pretrain, miss_vqa
    from models.vit import VisionTransformer

    def create_vit(vit, image_size, use_grad_checkpointing=False, ckpt_layer=0, drop_path_rate=0):
        width = vision["hidden_size"]
        encoder = VisionTransformer(img_size=image_size, patch_size=vision["patch_size"], embed_dim=width,
                                    depth=vision["num_hidden_layers"], num_heads=vision["num_attention_heads"],
                                    mlp_ratio=vision["intermediate_size"] / width, drop_path_rate=drop_path_rate)
        return encoder, width

    for module in (miss, miss_pretrain, miss_vqa):
        module.create_vit = create_vit
