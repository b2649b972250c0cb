"""Run-time patches that let the authors' M2I2 code (pengfeiliHEU/M2I2@807326d) run here: CPU only, offline,
transformers 5.x, numpy 2, any model size. No file of their repository is edited; every patch is applied in this
process before (`prepare`) or right after (`configure`) their modules are imported (../shared/reference/originals.md
§1.2, §1.3, §3.11).

1. numpy 2 removed `np.float` (`models/mae.py::get_1d_sincos_pos_embed` uses it): aliased to `float`.
2. torchvision (which timm 0.4.12 imports): the `torchvision::nms` operator schemas are defined before torchvision
   loads (the registry's only torchvision 0.28.0 is a CUDA build whose extension needs them, originals.md §1.1).
3. transformers 5 removed what their ALBEF `xbert.py` and `tokenization_bert.py` use: `apply_chunking_to_forward`,
   `find_pruneable_heads_and_indices`, `prune_linear_layer` in `transformers.modeling_utils` (§1.3 shim 1);
   `invert_attention_mask` and `get_head_mask` (shim 2, with the -10000 of transformers 4.8.1, which they pin);
   `init_weights` as transformers 4 ran it (shim 3: initialise, tie the LM head to the word embeddings);
   `add_code_sample_docstrings(tokenizer_class=...)` (shim 6: the docstring decorators become no-ops); the private
   character helpers of `transformers.tokenization_utils`, now `transformers.tokenization_python`; and
   `PreTrainedTokenizer.__init__`, which now reads the vocabulary before their `BertTokenizer.__init__` has set it
   (the vocabulary is read first; their own `__init__` then runs unchanged).
4. Offline: `BertForMaskedLM/BertModel/BertLMHeadModel.from_pretrained('bert-base-uncased', config=...)` builds the
   model from the config (the weights are loaded afterwards); `init_deit=False` (no MAE weights are downloaded).
5. Sizes other than the released ViT-B/16 (`configure(vision=...)`): `mae_vit_base_patch16` (pre-training) and
   `VisionTransformer` (VQA) build their own classes at the given sizes; the released geometry keeps their ViT-B/16.
"""

import sys
from functools import partial

import numpy as np
from torch import nn

from harness_common import build_bert_offline, restore_bert_helpers
from stand_ins import define_torchvision_operator_schemas


def prepare():
    """Patches that do not depend on their code or the model size (1, 2, 3 without the tokenizer): run before anything
    imports torchvision, timm or their modules."""
    if getattr(prepare, "done", False):
        return
    np.float = float
    library = define_torchvision_operator_schemas()
    _patch_transformers()
    prepare.library, prepare.done = library, True  # keep the schemas registered


def configure(vision=None):
    """After `sys.path` holds their repository: their tokenizer and `xbert.py` classes (3, 4) and, with `vision`
    ({"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size", and for
    pre-training "mim_hidden_size", "mim_num_hidden_layers", "mim_num_attention_heads"}), the ViT sizes (5)."""
    _patch_tokenizer()
    _patch_xbert()
    if vision is not None:
        _patch_vision(vision)


def _patch_transformers():
    import transformers.file_utils as file_utils
    import transformers.tokenization_python as tokenization_python

    restore_bert_helpers()
    file_utils.add_code_sample_docstrings = lambda *args, **kwargs: (lambda function: function)
    sys.modules["transformers.tokenization_utils"] = tokenization_python


def _patch_tokenizer():
    from models import tokenization_bert

    tokenizer_init = tokenization_bert.BertTokenizer.__init__

    def init_with_vocabulary(self, vocab_file, *args, **kwargs):
        self.vocab = tokenization_bert.load_vocab(vocab_file)
        tokenizer_init(self, vocab_file, *args, **kwargs)

    tokenization_bert.BertTokenizer.__init__ = init_with_vocabulary


def _patch_xbert():
    from models import xbert

    build_bert_offline(xbert.BertPreTrainedModel)


def _patch_vision(vision):
    """Their `MaskedAutoencoderViT` / `VisionTransformer` at the fixture's sizes, built where their models build the
    ViT-B/16 (`model_pretrain.mae_vit_base_patch16`, `model_vqa.VisionTransformer`)."""
    from models import mae, model_pretrain, model_vqa, vit

    width = vision["hidden_size"]
    sizes = dict(patch_size=vision["patch_size"], embed_dim=width, depth=vision["num_hidden_layers"],
                 num_heads=vision["num_attention_heads"], mlp_ratio=vision["intermediate_size"] / width,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6))

    def mae_vit(img_size, norm_pix_loss):
        return mae.MaskedAutoencoderViT(
            img_size=img_size, norm_pix_loss=norm_pix_loss, decoder_embed_dim=vision["mim_hidden_size"],
            decoder_depth=vision["mim_num_hidden_layers"], decoder_num_heads=vision["mim_num_attention_heads"], **sizes)

    def vision_transformer(img_size, **released):
        return vit.VisionTransformer(img_size=img_size, qkv_bias=True, **sizes)

    model_pretrain.mae_vit_base_patch16 = mae_vit
    model_vqa.VisionTransformer = vision_transformer
