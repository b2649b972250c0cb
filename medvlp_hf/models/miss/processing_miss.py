"""MISS processor: the image processor plus bert-base-uncased WordPiece with the two special tokens MISS adds
(`init_tokenizer` in the original's models/miss.py): `[DEC]` as bos (id 30522) and `[ENC]` (id 30523), vocab 30,524.

It writes every text layout the MISS heads read (reference/originals.md §4.3-4.6), by `text_kind`:
- `"report"` (captions and reports; pre-training ITC/ITM/LM, report generation): `text` -> `[CLS] text [SEP]`, at most
  30 tokens (the model writes `[ENC]`/`[DEC]` over the first token where the original does), with `return_labels=True`
  also the pre-training LM targets of that same text; `text_target` -> the
  captioning decoder's `[DEC] a picture of text [SEP]`, at most 40 tokens, the prompt not predicted (`MISS_Decoder`);
  `generation_prompt=True` -> `[DEC] a picture of [text]` for `generate()`.
- `"question"` (VQA): `text` -> `[ENC] question [SEP]`, at most 35 tokens; `text_target` -> the answer decoder's
  `[DEC] answer [SEP]`; `generation_prompt=True` adds the answer decoder's start `[DEC]`.
"""

import os

from transformers import BertTokenizer
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .image_processing_miss import MISSImageProcessor

logger = logging.get_logger(__name__)

DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"
# Length limits of the original, special tokens included: captions (miss_pretrain.py), questions (miss_vqa.py) and
# captioning-decoder texts (MISS_Decoder.forward). Answers are not truncated there.
TEXT_MAX_LENGTH = 30
QUESTION_MAX_LENGTH = 35
TARGET_MAX_LENGTH = 40
# MISS_Decoder's prompt ('a picture of '): it starts every caption and is not predicted.
REPORT_PROMPT = "a picture of"
TEXT_KINDS = ("report", "question")
TRUNCATING = (True, "longest_first", "only_first")
NOT_TRUNCATING = (False, None, "do_not_truncate")
IGNORE_INDEX = -100


class MISSProcessor(ProcessorMixin):
    r"""
    Processor of MISS: [`MISSImageProcessor`] for `pixel_values` and a bert-base-uncased `BertTokenizer` (lower-casing)
    with `[DEC]` (bos) and `[ENC]` added as special tokens.

    Outputs by call (`text_kind="report"` by default, `"question"` for VQA):
    - `text`: `input_ids`/`attention_mask`, `[CLS] text [SEP]` (report) or `[ENC] question [SEP]` (question); with
      `return_labels=True`, a report's `labels` too: what the pre-training decoder learns to write when it reads the
      caption as `[DEC] text [SEP]` (the ids, -100 at the first token and at padding; `MISSForPreTraining`'s default
      targets, `miss_pretrain.py`). Passed explicitly, they let Trainer count the target tokens of an accumulated
      batch (`num_items_in_batch`), so the LM loss is a true token mean under gradient accumulation.
    - `text_target`: a report gives the captioning decoder's `input_ids`/`attention_mask` `[DEC] a picture of report
      [SEP]` and `labels` (-100 at `[DEC]`, the prompt and padding, as `MISS_Decoder`); an answer
      (`text_kind="question"`) gives the answer decoder's `decoder_input_ids`/`decoder_attention_mask` `[DEC] answer
      [SEP]` and `labels` (-100 at `[DEC]` and padding; the decoder shifts them, so `[DEC]` is never a target).
      Questions and their answers may come in one call.
    - `generation_prompt=True`: for `generate()`, a report's start `[DEC] a picture of [text]` (no closing `[SEP]`,
      left-padded) as `input_ids`, or, with questions, the answer decoder's start `[DEC]` as `decoder_input_ids`.
    Padding is right-sided unless `padding_side` says otherwise; no `token_type_ids` (MISS's BERT has none).

    Args:
        image_processor ([`MISSImageProcessor`]): the image processor.
        tokenizer ([`BertTokenizer`]): WordPiece tokenizer holding `[DEC]` and `[ENC]` as special tokens.
        text_max_length (`int`, defaults to 30): default limit of `[CLS] text [SEP]` (pre-training captions).
        question_max_length (`int`, defaults to 35): default limit of `[ENC] question [SEP]`.
        target_max_length (`int`, defaults to 40): default limit of the captioning decoder's `[DEC] a picture of
            report [SEP]` (and of report generation prompts).
        report_prompt (`str`, defaults to `"a picture of"`): the captioning decoder's prompt ("" for none).
    """

    # The bundled tokenizer files (a folder of medvlp_hf/resources) a new MISS processor is built from.
    default_tokenizer = "bert-base-uncased"

    # The kinds of text `__call__` encodes (`text_kind`); the task collators ask for "question" in VQA.
    text_kinds = TEXT_KINDS
    # The kinds of `text` whose LM targets `return_labels=True` adds (the pre-training collator asks for them).
    text_label_kinds = ("report",)

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        text_max_length=TEXT_MAX_LENGTH,
        question_max_length=QUESTION_MAX_LENGTH,
        target_max_length=TARGET_MAX_LENGTH,
        report_prompt=REPORT_PROMPT,
        **kwargs,
    ):
        check_miss_special_tokens(tokenizer)
        self.text_max_length = text_max_length
        self.question_max_length = question_max_length
        self.target_max_length = target_max_length
        self.report_prompt = report_prompt
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, config, tokenizer_dir) -> "MISSProcessor":
        """The default processor of a model built from `config` (training from scratch): the `default_tokenizer`
        files in `tokenizer_dir`, the config's `vision_config.image_size` and BLIP's standard image preprocessing
        (a converted checkpoint's processor uses `MISSImageProcessor.as_released` instead).

        Raises ValueError when the config's special-token ids or vocabulary size disagree with the tokenizer's."""
        image_size = getattr(getattr(config, "vision_config", None), "image_size", None)
        if image_size is None:
            raise ValueError(f"{type(config).__name__} has no vision_config.image_size; pass a MISS config.")
        processor = cls.from_vocab_file(os.path.join(tokenizer_dir, "vocab.txt"), image_size=image_size)
        processor.check_model_config(config)
        return processor

    @classmethod
    def from_vocab_file(cls, vocab_file, image_size=224, **image_processor_kwargs) -> "MISSProcessor":
        """The MISS processor built offline from a bert-base-uncased `vocab.txt` (one token per line), with `[DEC]`
        and `[ENC]` added as the original's `init_tokenizer` does."""
        tokenizer = load_wordpiece_tokenizer(vocab_file)
        tokenizer.add_special_tokens({"bos_token": DEC_TOKEN, "additional_special_tokens": [ENC_TOKEN]})
        image_processor = MISSImageProcessor(size={"height": image_size, "width": image_size}, **image_processor_kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def check_model_config(self, config) -> None:
        """Raise ValueError when `config` (or its `text_config`) names other special-token ids than this tokenizer's,
        or has fewer word embeddings than the tokenizer has tokens."""
        text_config = getattr(config, "text_config", None)
        expected = {
            "bos_token_id": self.dec_token_id,
            "enc_token_id": self.enc_token_id,
            "cls_token_id": self.tokenizer.cls_token_id,
            "sep_token_id": self.tokenizer.sep_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        for source, prefix in ((config, ""), (text_config, "text_config.")):
            for name, token_id in expected.items():
                value = getattr(source, name, None)
                if value is not None and value != token_id:
                    raise ValueError(
                        f"the model config's {prefix}{name}={value} but the tokenizer's is {token_id}: the config was "
                        "made for another tokenizer; build the processor from that tokenizer or fix the config."
                    )
        vocab_size = getattr(text_config, "vocab_size", getattr(config, "vocab_size", None))
        if vocab_size is not None and vocab_size < len(self.tokenizer):
            raise ValueError(
                f"the model config's vocab_size={vocab_size} is smaller than the tokenizer's {len(self.tokenizer)} "
                "tokens (bert-base-uncased + [DEC] + [ENC] = 30524)."
            )

    @property
    def dec_token_id(self) -> int:
        """`[DEC]`, the decoders' first token (the original's `tokenizer.bos_token_id`)."""
        return self.tokenizer.convert_tokens_to_ids(DEC_TOKEN)

    @property
    def enc_token_id(self) -> int:
        """`[ENC]`, the first token of a multimodal-encoder input (the original's `tokenizer.enc_token_id`)."""
        return self.tokenizer.convert_tokens_to_ids(ENC_TOKEN)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]

    def __call__(
        self,
        images=None,
        text=None,
        text_target=None,
        text_kind="report",
        generation_prompt=False,
        return_labels=False,
        padding="longest",
        truncation=True,
        max_length=None,
        return_tensors="pt",
        padding_side=None,
        pad_to_multiple_of=None,
        generator=None,
        **images_kwargs,
    ) -> BatchFeature:
        """Encode images and/or texts (one image per text when both are given).

        Args:
            images: one image or a list/batch, see [`MISSImageProcessor`].
            text (`str` or `list[str]`): reports/captions, or questions with `text_kind="question"`; with
                `generation_prompt=True` and reports, the reports' beginnings (optional).
            text_target (`str` or `list[str]`): reports to train the captioning decoder on, or answers with
                `text_kind="question"` (see the class docstring for the outputs).
            text_kind (`"report"` or `"question"`): what `text` and `text_target` hold.
            generation_prompt (`bool`): encode the decoder's start for `generate()` (see the class docstring).
            return_labels (`bool`): with report `text`, also return its pre-training LM `labels` (see the class
                docstring).
            padding (`"longest"`, `"max_length"`, `True` or `False`): padding of each encoded text.
            truncation (`bool`): keep the first wordpieces that fit `max_length` (as the original's tokenizer call);
                when `False` a longer text raises ValueError.
            max_length (`int`): length limit of every text of the call, special tokens and prompt included;
                defaults per layout: 30 (`[CLS] report [SEP]`), 35 (questions), 40 (report targets and prompts),
                none (answers, as the original).
            return_tensors (`"pt"`, `"np"` or `None`): `None` gives python lists for the text (pixel values stay a
                tensor).
            padding_side (`"right"` or `"left"`): defaults to right, and to left for a report `generation_prompt`.
            pad_to_multiple_of (`int`): round the padded length up to a multiple of this.
            generator: accepted for the collator protocol (medvlp_hf.data.collators.base); MISS's targets are
                deterministic.
            images_kwargs: overrides of the image processor's settings (`size`, `do_resize`, ...).

        Raises:
            ValueError: an unknown `text_kind`, texts over `max_length` with `truncation=False`, a number of images
                other than the number of texts, `text` and `text_target` that would share `input_ids`,
                `return_labels` without report `text` to take them from.
        """
        if text_kind not in TEXT_KINDS:
            raise ValueError(f"text_kind must be one of {TEXT_KINDS}, got {text_kind!r}.")
        if return_labels and (text is None or text_kind not in self.text_label_kinds or generation_prompt):
            raise ValueError(
                "return_labels=True gives the pre-training LM targets of report `text` ([CLS] report [SEP]); call it "
                "with report text, without generation_prompt (answer and report targets come from `text_target`)."
            )
        if text_target is not None and generation_prompt:
            raise ValueError(
                "generation_prompt=True encodes a start for generate(); a `text_target` is a training target."
            )
        if text_kind == "report" and text is not None and text_target is not None:
            raise ValueError(
                "a report `text` ([CLS] report [SEP]) and a report `text_target` (the captioning decoder's "
                "[DEC] a picture of report [SEP]) would both be `input_ids`: encode them in two calls."
            )
        if images is None and text is None and text_target is None:
            raise ValueError("MISSProcessor needs images, text or both (or a text_target).")
        unknown = sorted(set(images_kwargs) - set(self.image_processor.valid_kwargs.__annotations__))
        if unknown:
            raise TypeError(f"MISSProcessor got unexpected keyword arguments {unknown}.")
        text_kwargs = {
            "padding": padding,
            "truncation": truncation,
            "max_length": max_length,
            "padding_side": padding_side,
            "pad_to_multiple_of": pad_to_multiple_of,
        }
        data = {}
        if images is not None:
            images_kwargs["return_tensors"] = return_tensors or "pt"
            data["pixel_values"] = self.image_processor(images, **images_kwargs)["pixel_values"]
        if generation_prompt and text_kind == "report":
            starts = [""] * len(data["pixel_values"]) if text is None else text
            data.update(self._encode("prompt", starts, return_tensors, **text_kwargs))
        elif return_labels:
            data.update(convert_tensors(self._encode_with_labels("report", text, text_kwargs), return_tensors))
        elif text is not None:
            data.update(self._encode(text_kind, text, return_tensors, **text_kwargs))
        if generation_prompt and text_kind == "question":
            count = len(data["input_ids"] if text is not None else data["pixel_values"])
            starts = self._encode("answer_start", [""] * count, return_tensors, **text_kwargs)
            data.update({f"decoder_{key}": value for key, value in starts.items()})
        if text_target is not None:
            target_kind = "answer" if text_kind == "question" else "report_target"
            data.update(self._encode_target(target_kind, text_target, return_tensors, text_kwargs))
        check_counts(data)
        return BatchFeature(data=data)

    def _layout(self, layout_name):
        """(leading ids, closing ids, default max_length, description) of a layout: `report` and `question` texts,
        `answer` and `report_target` targets, `prompt` (a report's start) and `answer_start` for generate()."""
        sep = [self.tokenizer.sep_token_id]
        prompt = self.tokenizer(self.report_prompt, add_special_tokens=False)["input_ids"] if self.report_prompt else []
        prompt_text = f" {self.report_prompt}" if self.report_prompt else ""
        decoder_start = [self.dec_token_id, *prompt]
        layouts = {
            "report": ([self.tokenizer.cls_token_id], sep, self.text_max_length, "[CLS] ... [SEP]"),
            "question": ([self.enc_token_id], sep, self.question_max_length, "[ENC] ... [SEP]"),
            "answer": ([self.dec_token_id], sep, None, "[DEC] ... [SEP]"),
            "answer_start": ([self.dec_token_id], [], None, "[DEC]"),
            "report_target": (decoder_start, sep, self.target_max_length, f"[DEC]{prompt_text} ... [SEP]"),
            "prompt": (decoder_start, [], self.target_max_length, f"[DEC]{prompt_text} ..."),
        }
        return layouts[layout_name]

    def _encode(
        self,
        layout_name,
        text,
        return_tensors="pt",
        padding="longest",
        truncation=True,
        max_length=None,
        padding_side=None,
        pad_to_multiple_of=None,
    ) -> dict:
        """Texts -> `{"input_ids", "attention_mask"}` in a layout of `_layout`; prompts are left-padded by default."""
        leading, closing, default_max_length, layout = self._layout(layout_name)
        if layout_name in ("prompt", "answer_start") and padding_side is None:
            padding_side = "left"
        return encode_layout(
            self.tokenizer,
            text,
            leading,
            closing,
            layout,
            max_length=default_max_length if max_length is None else max_length,
            truncation=truncation,
            padding=padding,
            padding_side=padding_side,
            pad_to_multiple_of=pad_to_multiple_of,
            return_tensors=return_tensors,
        )

    def _encode_with_labels(self, layout, text, text_kwargs) -> dict:
        """Texts in `layout` -> `input_ids`/`attention_mask` and `labels`: the ids, -100 at padding and at the leading
        tokens of the layout (`[CLS]`/`[DEC]` and the report prompt), which are given, never predicted."""
        encoded = self._encode(layout, text, "pt", **text_kwargs)
        leading = len(self._layout(layout)[0])
        real = encoded["attention_mask"].bool()
        given = real & (encoded["attention_mask"].cumsum(dim=1) <= leading)
        encoded["labels"] = encoded["input_ids"].masked_fill(~real | given, IGNORE_INDEX)
        return encoded

    def _encode_target(self, layout, text, return_tensors, text_kwargs) -> dict:
        """Targets -> the decoder's inputs and `labels` (`_encode_with_labels`); an answer's go to the answer decoder's
        `decoder_input_ids`/`decoder_attention_mask`."""
        encoded = self._encode_with_labels(layout, text, text_kwargs)
        if layout == "answer":
            encoded = {
                "decoder_input_ids": encoded["input_ids"],
                "decoder_attention_mask": encoded["attention_mask"],
                "labels": encoded["labels"],
            }
        return convert_tensors(encoded, return_tensors)


def check_counts(data: dict) -> None:
    """Raise ValueError unless the images, texts and targets of one call are equally many."""
    counts = {key: len(data[key]) for key in ("pixel_values", "input_ids", "labels") if key in data}
    if len(set(counts.values())) > 1:
        names = {"pixel_values": "images", "input_ids": "texts", "labels": "targets"}
        found = " and ".join(f"{count} {names[key]}" for key, count in counts.items())
        raise ValueError(f"got {found}; MISS pairs one image with one text (and its target).")


def check_miss_special_tokens(tokenizer) -> None:
    """Raise ValueError unless `tokenizer` holds `[DEC]` and `[ENC]` as special tokens (MISS's decoder and
    multimodal-encoder first tokens; decoding with `skip_special_tokens=True` must drop them)."""
    if tokenizer is None:
        return
    special = set(tokenizer.all_special_tokens)
    missing = [token for token in (DEC_TOKEN, ENC_TOKEN) if token not in special]
    if missing:
        raise ValueError(
            f"the tokenizer has no special token {' or '.join(missing)}; MISS adds both to bert-base-uncased as "
            "the original's init_tokenizer does. Add them with tokenizer.add_special_tokens({'bos_token': '[DEC]', "
            "'additional_special_tokens': ['[ENC]']}) (and resize the model's embeddings if the vocabulary grew), "
            "or build the processor with MISSProcessor.from_vocab_file(vocab_file)."
        )



# Copied from medvlp_hf.models.medvill.processing_medvill.load_wordpiece_tokenizer
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


# Copied from medvlp_hf.models.medvill.processing_medvill.text_list
def text_list(text) -> list[str]:
    """A str or a non-empty list/tuple of str -> list of str; TypeError for anything else."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"text must be a str or a non-empty list of str, got {type(text).__name__}.")
    return list(texts)


# Copied from medvlp_hf.models.medvill.processing_medvill.encode_layout
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


# Copied from medvlp_hf.models.medvill.processing_medvill.convert_tensors
def convert_tensors(encoded: dict, return_tensors) -> dict:
    """A dict of torch tensors as `return_tensors` asks: "pt" as is, "np" numpy arrays, None python lists."""
    if return_tensors == "pt":
        return encoded
    return {key: value.numpy() if return_tensors == "np" else value.tolist() for key, value in encoded.items()}

__all__ = ["MISSProcessor"]
