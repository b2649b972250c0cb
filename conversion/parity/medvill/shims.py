"""Run-time patches that let the authors' MedViLL code (SuperSupermoon/MedViLL@dd51e72) run here: CPU only,
offline, transformers 5.x, any model size. No file of their repository is edited; every patch is applied in this
process before their modules are imported (`install`).

1. `.cuda()` on tensors and modules is the identity (their forwards call it).
2. torchvision: the `torchvision::nms` operator schemas are defined before torchvision loads (the registry's only
   torchvision 0.28.0 is a CUDA build whose extension needs them, ../../shared/reference/originals.md §1.1), and
   `torchvision.models.resnet50` / `densenet121` build torchvision's own ResNet-50 without downloading weights, or
   torchvision's `ResNet`/`Bottleneck` at the fixture's narrow widths.
3. transformers: `BertConfig.from_pretrained(...)` returns the given BERT config (offline) with eager attention
   (SDPA rejects their float16 additive mask); the pre-training/retrieval encoder output becomes transformers
   3.5's tuple `(hidden, attentions)`; `transformers.optimization.AdamW` is `torch.optim.AdamW`.
4. Modules imported but not used on the paths run here: `boto3`, `botocore.exceptions`, `fuzzywuzzy`, `h5py`,
   `wandb`, and (`stub_module`, for the classification code, which imports a pip `pytorch_pretrained_bert` it does
   not ship) a `pytorch_pretrained_bert` with placeholder names.
5. Their pre-training data set calls `tokenizer(text)` where the trained version must have called
   `tokenizer.tokenize(text)` (originals.md §2.6): `WordTokenizer` returns tokens when called.
"""

import contextlib
import types

import torch
from torch import nn

from stand_ins import define_torchvision_operator_schemas, stub_module


def install(bert_config: dict, resnet: dict | None):
    """bert_config: the BERT config every `BertConfig.from_pretrained` returns. resnet: None for torchvision's
    ResNet-50, else {"stem": int, "widths": [4 ints], "depths": [4 ints]}."""
    prepare()
    configure(bert_config, resnet)


def prepare():
    """The patches that do not depend on the model size (1, 2's operator schemas, 4); run it before anything
    imports torchvision, transformers' image processing included."""
    if getattr(prepare, "done", False):
        return
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    _stub_modules()
    library = define_torchvision_operator_schemas()
    prepare.library, prepare.done = library, True  # keep the schemas registered


def configure(bert_config: dict, resnet: dict | None):
    """The size-dependent patches (2's ResNet builders, 3)."""
    _patch_torchvision(resnet)
    _patch_transformers(bert_config)


def _stub_modules():
    class ClientError(Exception):
        pass

    stub_module("boto3")
    stub_module("botocore")
    stub_module("botocore.exceptions", ClientError=ClientError)
    stub_module("fuzzywuzzy", fuzz=types.SimpleNamespace(token_sort_ratio=lambda a, b: 100 * (a == b)))
    stub_module("h5py")
    stub_module("wandb")


def _patch_torchvision(resnet):
    import torchvision
    from torchvision.models import resnet as resnet_module

    def build_resnet(*args, **kwargs):
        model = resnet_module.ResNet(resnet_module.Bottleneck, resnet["depths"] if resnet else [3, 4, 6, 3])
        if resnet:
            model.inplanes = resnet["stem"]
            model.conv1 = nn.Conv2d(3, resnet["stem"], kernel_size=7, stride=2, padding=3, bias=False)
            model.bn1 = nn.BatchNorm2d(resnet["stem"])
            for stage, (width, depth) in enumerate(zip(resnet["widths"], resnet["depths"])):
                layer = model._make_layer(resnet_module.Bottleneck, width, depth, stride=1 if stage == 0 else 2)
                setattr(model, f"layer{stage + 1}", layer)
            model.fc = nn.Linear(4 * resnet["widths"][-1], 1000)
        return model

    torchvision.models.resnet50 = build_resnet
    torchvision.models.densenet121 = build_resnet


def _patch_transformers(bert_config):
    import transformers
    import transformers.optimization
    from transformers.models.bert import modeling_bert

    def from_pretrained(*args, **kwargs):
        config = transformers.BertConfig(**bert_config)
        config._attn_implementation = "eager"
        return config

    transformers.BertConfig.from_pretrained = staticmethod(from_pretrained)
    transformers.optimization.AdamW = torch.optim.AdamW
    encoder_forward = modeling_bert.BertEncoder.forward

    def tuple_encoder_forward(self, hidden_states, attention_mask=None, *args, output_attentions=False,
                              output_hidden_states=False, **kwargs):
        output = encoder_forward(self, hidden_states, attention_mask, *args, **kwargs)
        if output_attentions:  # what transformers 3.5 returned to the pre-training and retrieval encoders
            return output.last_hidden_state, None
        return output

    modeling_bert.BertEncoder.forward = tuple_encoder_forward


class WordTokenizer:
    """A fixed vocabulary whose `__call__` and `tokenize` split on spaces (the fixture texts are word pieces)."""

    def __init__(self, tokens):
        self.vocab = {token: i for i, token in enumerate(tokens)}
        self.ids_to_tokens = list(tokens)

    def __call__(self, text):
        return text.split()

    tokenize = __call__

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab[token] for token in tokens]

    def convert_ids_to_tokens(self, ids):
        return [self.ids_to_tokens[i] for i in ids]


@contextlib.contextmanager
def fixed_randperm(permutation):
    """`torch.randperm` returns `permutation` (their image encoders sample grid cells with it)."""
    original = torch.randperm
    torch.randperm = lambda n, *args, **kwargs: permutation[:n].clone()
    try:
        yield
    finally:
        torch.randperm = original
