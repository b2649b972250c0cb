"""CheXbert (Smit et al., 2020) report labeler, loaded only from a ``chexbert.pth`` the user supplies.

Architecture of the released checkpoint: bert-base-uncased, the [CLS] hidden state fed to 14 linear
heads (13 with classes blank/positive/negative/uncertain, the last, No Finding, with blank/positive),
keys prefixed ``module.`` (DataParallel) inside ``model_state_dict``. Reports are stripped, line
breaks and runs of spaces collapsed, WordPiece-tokenised and cut to 512 tokens ending in [SEP], as
the CheXbert code does. Nothing is downloaded: the weights path must exist, and the vocabulary is the
bert-base-uncased one shipped with this package.
"""
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import BertConfig
from transformers import BertModel
from transformers import BertTokenizer

from medvlp_hf.metrics.chexpert_labels import CHEXPERT_OBSERVATIONS
from medvlp_hf.resources import bert_base_uncased_vocab_file

CHEXBERT_OBSERVATIONS = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices", "No Finding",
)
CLASS_TO_LABEL = np.array([np.nan, 1.0, 0.0, -1.0])
MAX_TOKENS = 512


class CheXbertModel(nn.Module):
    """BERT encoder + one linear head per observation, in the released checkpoint's layout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config)
        heads = [nn.Linear(config.hidden_size, 4) for _ in range(len(CHEXBERT_OBSERVATIONS) - 1)]
        self.linear_heads = nn.ModuleList(heads + [nn.Linear(config.hidden_size, 2)])

    def forward(self, input_ids, attention_mask):
        cls_hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return [head(cls_hidden) for head in self.linear_heads]


def _state_dict_from_checkpoint(path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("model_state_dict", checkpoint)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    state.pop("bert.embeddings.position_ids", None)
    return state


class CheXbertLabeler:
    """``labeler(texts) -> (N, 14)`` CheXpert labels (1, 0, -1, NaN) from local CheXbert weights."""

    def __init__(self, weights_path, vocab_file=None, bert_config: BertConfig = None, device="cpu", batch_size: int = 16):
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise FileNotFoundError(
                f"CheXbert weights not found at {weights_path}. CheXbert is never downloaded: obtain chexbert.pth "
                "(e.g. StanfordAIMI/RRG_scorers on the Hub) on a connected machine and pass its local path"
            )
        self.tokenizer = BertTokenizer(vocab=str(vocab_file or bert_base_uncased_vocab_file()), do_lower_case=True)
        self.model = CheXbertModel(bert_config or BertConfig())
        missing, unexpected = self.model.load_state_dict(_state_dict_from_checkpoint(weights_path), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{weights_path} is not a CheXbert checkpoint for this architecture: missing keys {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        self.model.to(device).eval()
        self.device, self.batch_size = device, batch_size
        self._columns = [CHEXBERT_OBSERVATIONS.index(name) for name in CHEXPERT_OBSERVATIONS]

    def encode(self, text: str) -> list:
        """Token ids of one report, as CheXbert builds them."""
        tokens = self.tokenizer.tokenize(" ".join(text.split()))
        ids = [self.tokenizer.cls_token_id] + self.tokenizer.convert_tokens_to_ids(tokens) + [self.tokenizer.sep_token_id]
        return ids[: MAX_TOKENS - 1] + [self.tokenizer.sep_token_id] if len(ids) > MAX_TOKENS else ids

    @torch.no_grad()
    def logits(self, texts) -> list:
        """The 14 heads' logits (CheXbert head order) for a batch of reports, padded as CheXbert pads."""
        encoded = [self.encode(text) for text in texts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in encoded], device=self.device)
        lengths = torch.tensor([len(ids) for ids in encoded], device=self.device)
        attention_mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).long()
        return self.model(input_ids, attention_mask)

    def _classes(self, texts) -> np.ndarray:
        return torch.stack([head.argmax(dim=1) for head in self.logits(texts)], dim=1).cpu().numpy()

    def __call__(self, texts) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a list of report texts, not a single string")
        if len(texts) == 0:
            return np.zeros((0, len(CHEXPERT_OBSERVATIONS)))
        classes = np.concatenate([self._classes(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)])
        return CLASS_TO_LABEL[classes][:, self._columns]
