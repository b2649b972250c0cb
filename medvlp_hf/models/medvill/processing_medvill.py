"""MedViLL processor: the image processor plus bert-base-uncased WordPiece, producing the text stream
`[SEP] w_1 .. w_n [SEP]` that every MedViLL head reads (the model prepends `[CLS] v_1..v_N` itself), and the
report-generation training stream with its [MASK]ed targets."""

import os

import torch
from transformers import BertTokenizer
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .image_processing_medvill import MedViLLImageProcessor

logger = logging.get_logger(__name__)

# Pre-training keeps 253 wordpieces after the visual [SEP] and closes them with [SEP] (report-generation fine-tuning
# uses the same max_len_b=253), so the text stream `[SEP] + 253 + [SEP]` is 255 tokens.
DEFAULT_TEXT_MAX_LENGTH = 255
# VQA-RAD questions may end with an answer-type marker that MedViLL strips before tokenising.
QUESTION_TYPE_MARKERS = ("? -yes/no", "? -open", "? - open")
# Then, in this order: drop commas and question marks, split the possessive, drop ellipses, unify "x ray", drop dots.
QUESTION_REPLACEMENTS = ((",", ""), ("?", ""), ("'s", " 's"), ("...", ""), ("x ray", "x-ray"), (".", ""))
TEXT_KINDS = ("report", "question")
TRUNCATING = (True, "longest_first", "only_first")
NOT_TRUNCATING = (False, None, "do_not_truncate")
IGNORE_INDEX = -100
# Report-generation fine-tuning (the original's `Preprocess4Seq2seq`): per report min(3, max(1, round(0.15 * n)))
# of its n wordpieces are predicted, and with p=0.5 one of those slots goes to the closing [SEP].
REPORT_MAX_PREDICTIONS = 3
REPORT_MASK_PROBABILITY = 0.15
REPORT_FINAL_SEP_PROBABILITY = 0.5


class MedViLLProcessor(ProcessorMixin):
    r"""
    Processor of MedViLL: [`MedViLLImageProcessor`] for `pixel_values` and a bert-base-uncased `BertTokenizer`
    (lower-casing) for the text stream.

    `input_ids` is `[SEP] wordpieces [SEP]` padded with `[PAD]` (right by default, left with
    `padding_side="left"` for generation); `attention_mask` marks the real tokens including both `[SEP]`. No
    `token_type_ids`: the model derives segments from the layout. A report passed as `text_target` gives the
    report-generation training inputs instead: the same stream with MedViLL's [MASK]ed targets and `labels`
    (see [`~MedViLLProcessor.mask_for_report_generation`]).

    Args:
        image_processor ([`MedViLLImageProcessor`]): the image processor.
        tokenizer ([`BertTokenizer`]): WordPiece tokenizer with the bert-base-uncased vocabulary.
        max_length (`int`, defaults to 255): default length limit of the text stream including both `[SEP]`
            (253 wordpieces, the original text budget).
    """

    # The kinds of text `__call__` encodes (`text_kind`); the task collators ask for "question" in VQA.
    text_kinds = TEXT_KINDS

    def __init__(self, image_processor=None, tokenizer=None, max_length=DEFAULT_TEXT_MAX_LENGTH, **kwargs):
        if max_length < 2:
            raise ValueError(f"max_length={max_length} leaves no room for the two [SEP] of the text stream.")
        self.max_length = max_length
        super().__init__(image_processor, tokenizer, **kwargs)

    # The bundled tokenizer files (a folder of medvlp_hf/resources) a new MedViLL processor is built from.
    default_tokenizer = "bert-base-uncased"

    @classmethod
    def from_model_config(cls, config, tokenizer_dir) -> "MedViLLProcessor":
        """The default processor of a model built from `config` (training from scratch, conversion): the
        `default_tokenizer` files in `tokenizer_dir` and the config's image size."""
        return cls.from_vocab_file(os.path.join(tokenizer_dir, "vocab.txt"), image_size=config.image_size)

    @classmethod
    def from_vocab_file(cls, vocab_file, image_size=512, max_length=DEFAULT_TEXT_MAX_LENGTH, **image_processor_kwargs):
        """The default MedViLL processor built offline from a bert-base-uncased `vocab.txt` (one token per line)."""
        tokenizer = load_wordpiece_tokenizer(vocab_file)
        image_processor = MedViLLImageProcessor(size={"height": image_size, "width": image_size}, **image_processor_kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer, max_length=max_length)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    @staticmethod
    def clean_question(question: str) -> str:
        """MedViLL's VQA question normalisation, applied before WordPiece: lower-case, strip the answer-type
        markers ("? -yes/no", "? -open", "? - open"), remove `,` `?` `...` `.`, write "'s" as " 's" and
        "x ray" as "x-ray"."""
        question = question.lower()
        for marker in QUESTION_TYPE_MARKERS:
            question = question.replace(marker, "")
        for old, new in QUESTION_REPLACEMENTS:
            question = question.replace(old, new)
        return question

    def __call__(
        self,
        images=None,
        text=None,
        padding="longest",
        truncation=True,
        max_length=None,
        return_tensors="pt",
        padding_side=None,
        text_kind="report",
        pad_to_multiple_of=None,
        text_target=None,
        generator=None,
        generation_prompt=False,
        **images_kwargs,
    ) -> BatchFeature:
        """Encode images and/or texts (one image per text when both are given).

        Args:
            images: one image or a list/batch, see [`MedViLLImageProcessor`].
            text (`str` or `list[str]`): reports or questions.
            padding (`"longest"`, `"max_length"`, `True` or `False`): padding of the text stream.
            truncation (`bool`): keep the first `max_length - 2` wordpieces and both `[SEP]`; when `False` a
                longer text raises.
            max_length (`int`, defaults to `self.max_length`): text-stream length limit including both `[SEP]`.
            return_tensors (`"pt"`, `"np"` or `None`): `None` gives python lists for the text (pixel values stay
                a tensor).
            padding_side (`"right"` or `"left"`): defaults to the tokenizer's (right).
            text_kind (`"report"` or `"question"`): `"question"` applies [`~MedViLLProcessor.clean_question`]
                first, as MedViLL's VQA code does.
            pad_to_multiple_of (`int`): round the padded length up to a multiple of this.
            text_target (`str` or `list[str]`): reports to train report generation on, instead of `text`: returns
                the masked stream as `input_ids`/`attention_mask` and `labels` (original ids at the [MASK]s, -100
                elsewhere), see [`~MedViLLProcessor.mask_for_report_generation`].
            generator (`torch.Generator`): source of the `text_target` masks (default: torch's global generator).
            generation_prompt (`bool`): encode `text` as the start of a report for `generate()` to continue:
                `[SEP] wordpieces` without the closing [SEP] (which would end the text), left-padded unless
                `padding_side` says otherwise.
            images_kwargs: overrides of the image processor's settings (`size`, `do_resize`, ...).
        """
        if text is not None and text_target is not None:
            raise ValueError(
                "MedViLL's text stream holds one text: pass `text` (to encode) or `text_target` (a report to train "
                "report generation on), not both."
            )
        if text_target is not None and generation_prompt:
            raise ValueError("generation_prompt=True encodes `text` for generate(); a `text_target` is a training target.")
        if images is None and text is None and text_target is None:
            raise ValueError("MedViLLProcessor needs images, text or both (or a text_target).")
        unknown = sorted(set(images_kwargs) - set(self.image_processor.valid_kwargs.__annotations__))
        if unknown:
            raise TypeError(f"MedViLLProcessor got unexpected keyword arguments {unknown}.")
        text_kwargs = {
            "generation_prompt": generation_prompt,
            "padding": padding,
            "truncation": truncation,
            "max_length": max_length,
            "padding_side": padding_side,
            "text_kind": text_kind,
            "pad_to_multiple_of": pad_to_multiple_of,
        }
        data = {}
        if text is not None:
            data.update(self.encode_text(text, return_tensors=return_tensors, **text_kwargs))
        if images is not None:
            images_kwargs["return_tensors"] = return_tensors or "pt"
            data["pixel_values"] = self.image_processor(images, **images_kwargs)["pixel_values"]
        if text_target is not None:
            data.update(self._encode_report_target(text_target, generator, return_tensors, text_kwargs))
        if "input_ids" in data and images is not None and len(data["input_ids"]) != len(data["pixel_values"]):
            raise ValueError(
                f"got {len(data['pixel_values'])} images and {len(data['input_ids'])} texts; MedViLL pairs one "
                "image with one text."
            )
        return BatchFeature(data=data)

    def encode_text(
        self,
        text,
        padding="longest",
        truncation=True,
        max_length=None,
        padding_side=None,
        text_kind="report",
        pad_to_multiple_of=None,
        return_tensors="pt",
        generation_prompt=False,
    ) -> dict:
        """Texts -> `{"input_ids", "attention_mask"}` in the `[SEP] wordpieces [SEP]` layout (`[SEP] wordpieces`,
        left-padded by default, for a `generation_prompt`)."""
        if text_kind not in TEXT_KINDS:
            raise ValueError(f"text_kind must be one of {TEXT_KINDS}, got {text_kind!r}.")
        texts = text_list(text)
        if text_kind == "question":
            texts = [self.clean_question(t) for t in texts]
        sep = self.tokenizer.sep_token_id
        if generation_prompt and padding_side is None:
            padding_side = "left"
        return encode_layout(
            self.tokenizer,
            texts,
            leading=[sep],
            closing=[] if generation_prompt else [sep],
            layout="[SEP] ..." if generation_prompt else "[SEP] ... [SEP]",
            max_length=self.max_length if max_length is None else max_length,
            truncation=truncation,
            padding=padding,
            padding_side=padding_side,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors=return_tensors,
        )

    def _encode_report_target(self, text, generator, return_tensors, text_kwargs) -> dict:
        """Reports -> `{"input_ids", "attention_mask", "labels"}`: the text stream with MedViLL's report-generation
        masks drawn from `generator`."""
        encoded = self.encode_text(text, return_tensors="pt", **text_kwargs)
        encoded["input_ids"], encoded["labels"] = self.mask_for_report_generation(
            encoded["input_ids"], encoded["attention_mask"], generator
        )
        return convert_tensors(encoded, return_tensors)

    def mask_for_report_generation(
        self,
        input_ids,
        attention_mask,
        generator=None,
        max_predictions=REPORT_MAX_PREDICTIONS,
        mask_probability=REPORT_MASK_PROBABILITY,
        final_token_probability=REPORT_FINAL_SEP_PROBABILITY,
    ):
        """MedViLL's report-generation fine-tuning masks (`Preprocess4Seq2seq`; reference/originals.md §2.7).

        Per row, `min(max_predictions, max(1, round(mask_probability * n)))` of its `n` wordpieces become [MASK]
        (never a random token); with `final_token_probability` one of those slots goes to the closing [SEP]
        instead, so the model learns to stop (always for an empty report). Works for right and left padding.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, length)`): text streams `[SEP] wordpieces [SEP]`.
            attention_mask (`torch.LongTensor` of shape `(batch, length)`): 1 at the stream's real tokens.
            generator (`torch.Generator`, *optional*): source of the draws (default: torch's global generator).

        Returns:
            `(masked input_ids, labels)`, both `(batch, length)`; `labels` holds the original ids at the masked
            positions and -100 elsewhere.
        """
        sep = self.tokenizer.sep_token_id
        real = attention_mask.bool()
        wordpieces = real & (input_ids != sep)
        final_positions = input_ids.shape[1] - 1 - real.flip(dims=[1]).int().argmax(dim=1)
        masked = input_ids.clone()
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row in range(input_ids.shape[0]):
            text_positions = wordpieces[row].nonzero().flatten()
            count = len(text_positions)
            predictions = min(max_predictions, max(1, round(mask_probability * count)))
            with_final = bool(torch.rand((), generator=generator) < final_token_probability) or count == 0
            shuffled = text_positions[torch.randperm(count, generator=generator)]
            positions = shuffled[: predictions - 1] if with_final else shuffled[:predictions]
            if with_final:
                positions = torch.cat([positions, final_positions[row].unsqueeze(0)])
            labels[row, positions] = input_ids[row, positions]
            masked[row, positions] = self.tokenizer.mask_token_id
        return masked, labels


def load_wordpiece_tokenizer(vocab_file) -> BertTokenizer:
    """A lower-casing `BertTokenizer` built offline from a WordPiece `vocab.txt` (one token per line).

    Raises FileNotFoundError for a missing file and ValueError for a vocab without BERT's special tokens (the
    tokenizer would append them after the vocab, with ids no BERT checkpoint has)."""
    vocab_file = os.fspath(vocab_file)
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(
            f"WordPiece vocab file {vocab_file!r} not found; pass the bert-base-uncased vocab.txt "
            "(medvlp_hf.resources.bert_base_uncased_vocab_file())."
        )
    tokenizer = BertTokenizer(vocab=vocab_file, do_lower_case=True)
    appended = [str(token) for index, token in tokenizer.added_tokens_decoder.items() if index >= tokenizer.vocab_size]
    if appended:
        raise ValueError(
            f"{vocab_file!r} lacks BERT's special tokens {appended}; it is not a BERT WordPiece vocab "
            "(bert-base-uncased's is medvlp_hf.resources.bert_base_uncased_vocab_file())."
        )
    return tokenizer


def text_list(text) -> list[str]:
    """A str or a non-empty list/tuple of str -> list of str; TypeError for anything else."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"text must be a str or a non-empty list of str, got {type(text).__name__}.")
    return list(texts)


def encode_layout(
    tokenizer,
    text,
    leading,
    closing,
    layout,
    max_length=None,
    truncation=True,
    padding="longest",
    padding_side=None,
    pad_to_multiple_of=None,
    return_tensors="pt",
) -> dict:
    """Texts -> `{"input_ids", "attention_mask"}`: per text `leading + wordpieces + closing` (token-id lists), padded.

    `max_length` counts every token (None: no limit); over it, `truncation=True` keeps the first wordpieces that fit
    and `False` raises ValueError naming the text; the first truncation of a process logs a warning saying so.
    `layout` describes the layout in messages, e.g. "[SEP] ... [SEP]".
    """
    texts = text_list(text)
    if truncation not in TRUNCATING + NOT_TRUNCATING:
        raise ValueError(f"truncation must be True or False, got {truncation!r}.")
    if max_length is not None and max_length < len(leading) + len(closing):
        raise ValueError(f"max_length={max_length} leaves no room for {layout}.")
    if padding == "max_length" and max_length is None:
        raise ValueError(f"padding='max_length' needs a max_length for {layout} (it has no default).")
    sequences = []
    for index, wordpieces in enumerate(tokenizer(texts, add_special_tokens=False)["input_ids"]):
        length = len(leading) + len(wordpieces) + len(closing)
        if max_length is not None and length > max_length:
            budget = max_length - len(leading) - len(closing)
            if truncation in NOT_TRUNCATING:
                raise ValueError(
                    f"text {index} is {length} tokens long as {layout}, over max_length={max_length}; pass "
                    f"truncation=True (keeps its first {budget} wordpieces) or a larger max_length."
                )
            logger.warning_once(
                f"texts over max_length={max_length} as {layout} are cut to their first {budget} wordpieces "
                "(truncation=True, the default, as the original code does); pass truncation=False to get an error "
                "instead, or a larger max_length."
            )
            wordpieces = wordpieces[:budget]
        sequences.append([*leading, *wordpieces, *closing])
    padded = tokenizer.pad(
        {"input_ids": sequences},
        padding=padding,
        max_length=max_length,
        pad_to_multiple_of=pad_to_multiple_of,
        padding_side=padding_side,
        return_attention_mask=True,
        return_tensors=return_tensors,
    )
    return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"]}


def convert_tensors(encoded: dict, return_tensors) -> dict:
    """A dict of torch tensors as `return_tensors` asks: "pt" as is, "np" numpy arrays, None python lists."""
    if return_tensors == "pt":
        return encoded
    return {key: value.numpy() if return_tensors == "np" else value.tolist() for key, value in encoded.items()}


__all__ = ["MedViLLProcessor"]
