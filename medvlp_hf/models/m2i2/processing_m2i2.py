"""M2I2 processor: the image processor plus bert-base-uncased WordPiece written as ALBEF's own tokenizer writes it, and
the authors' text normalisation (reference/originals.md §3.3, §3.6, §3.7).

ALBEF's vendored `models/tokenization_bert.py` adds only `[CLS]` to a single text, so captions and questions are
`[CLS] w_1..w_n` with no closing `[SEP]`; answers carry a literal `"[SEP]"` appended to the string before
tokenisation (`config['eos']`), so the answer decoder reads `[CLS] a_1..a_n [SEP]`. A stock BERT call would add a
`[SEP]` to every text and shift every position after it.

Before tokenisation the original normalises each text in its datasets: captions with `pre_caption`
(`dataset/utils.py`), questions with `pre_question` and training answers with `preprocess_answer`
(`dataset/medvqa_dataset.py`). The three functions below reproduce them and the processor applies them by default
(named options `normalize_reports`, `normalize_questions`, `normalize_answers`).
"""

import os
import re

from transformers import BertTokenizer
from transformers.image_processing_base import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .image_processing_m2i2 import PRETRAINING_IMAGE_SIZE, M2I2ImageProcessor

logger = logging.get_logger(__name__)

# Length limits of the original, [CLS] included: captions (`pretrain_med.py`) and questions in VQA training
# (`train_rad.py`, `train_slake.py`, `train_pathvqa.py`) are tokenised with `truncation=True, max_length=25`; test
# questions and all answers are not truncated.
TEXT_MAX_LENGTH = 25
QUESTION_MAX_LENGTH = 25
# Word limits of the normalisation: `pre_caption(caption, 30)` (`pretrain_dataset`), `pre_question(question, 30)` in
# training and 50 at test (`rad_dataset`, `pathvqa_dataset`, `slake_dataset`).
REPORT_MAX_WORDS = 30
QUESTION_MAX_WORDS = 30
TEST_QUESTION_MAX_WORDS = 50
TEXT_KINDS = ("report", "question")
# The processor's saved settings (processor_config.json), see the class docstring.
SETTINGS = (
    "text_max_length",
    "question_max_length",
    "report_max_words",
    "question_max_words",
    "normalize_reports",
    "normalize_questions",
    "normalize_answers",
)
BERT_SPECIAL_TOKENS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]", "pad_token": "[PAD]"}
TRUNCATING = (True, "longest_first", "only_first")
NOT_TRUNCATING = (False, None, "do_not_truncate")
IGNORE_INDEX = -100


class M2I2Processor(ProcessorMixin):
    r"""
    Processor of M2I2: [`M2I2ImageProcessor`] for `pixel_values` and a bert-base-uncased `BertTokenizer`
    (lower-casing, vocab 30,522) whose texts are laid out as ALBEF's tokenizer lays them out.

    Outputs by call (`text_kind="report"` by default, `"question"` for VQA):
    - `text`: `input_ids`/`attention_mask` `[CLS] w_1..w_n` (no closing `[SEP]`), captions/reports after
      `pre_caption` or questions after `pre_question`; at most `text_max_length` / `question_max_length` tokens.
    - `text_target` (answers, `text_kind="question"`): the answer decoder's `decoder_input_ids` /
      `decoder_attention_mask` `[CLS] a_1..a_n [SEP]` after `preprocess_answer`, and `labels`: the ids with -100 at
      `[CLS]` and at padding (the decoder predicts `labels[:, t + 1]` at position t, as `M2I2ForVQA` and the
      original's `BertLMHeadModel` shift them). Questions and their answers may come in one call.
    - `generation_prompt=True` (`text_kind="question"`): also the answer decoder's start `[CLS]` as
      `decoder_input_ids` / `decoder_attention_mask`, for `M2I2ForVQA.generate()`.
    - [`~M2I2Processor.encode_answer_candidates`]: a candidate answer list as `[CLS] a_1..a_n [SEP]` rows for
      `M2I2ForVQA.rank_answers`.
    Captions train ITC, ITM and MLM (whose masking `M2I2ForPreTraining` draws itself) and no decoder, so reports take
    no `text_target` and no `generation_prompt`. Padding is right-sided unless `padding_side` says otherwise; no
    `token_type_ids` (ALBEF's are all 0, which the model uses by default).

    The defaults are the original's training settings. Its VQA evaluation cuts questions at 50 words and does not
    truncate their tokens: [`~M2I2Processor.for_evaluation`] gives that processor (on VQA-RAD, 2 of the 451 test
    questions are longer than 25 tokens).

    Args:
        image_processor ([`M2I2ImageProcessor`]): the image processor.
        tokenizer ([`BertTokenizer`]): WordPiece tokenizer whose special tokens are BERT's `[CLS]`, `[SEP]`,
            `[MASK]`, `[PAD]`.
        text_max_length (`int` or `None`, defaults to 25): default limit of a caption/report `[CLS] w_1..w_n`
            (`None`: no limit).
        question_max_length (`int` or `None`, defaults to 25): default limit of a question (`None`: no limit, as at
            test time).
        report_max_words (`int`, defaults to 30): words `pre_caption` keeps.
        question_max_words (`int`, defaults to 30): words `pre_question` keeps (50 at test time).
        normalize_reports, normalize_questions, normalize_answers (`bool`, default `True`): apply `pre_caption`,
            `pre_question`, `preprocess_answer` before tokenisation, as the original's datasets do.
    """

    # The bundled tokenizer files (a folder of medvlp_hf/resources) a new M2I2 processor is built from.
    default_tokenizer = "bert-base-uncased"

    # The kinds of text `__call__` encodes (`text_kind`); the task collators ask for "question" in VQA.
    text_kinds = TEXT_KINDS

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        text_max_length=TEXT_MAX_LENGTH,
        question_max_length=QUESTION_MAX_LENGTH,
        report_max_words=REPORT_MAX_WORDS,
        question_max_words=QUESTION_MAX_WORDS,
        normalize_reports=True,
        normalize_questions=True,
        normalize_answers=True,
        **kwargs,
    ):
        check_m2i2_special_tokens(tokenizer)
        for name, value in (("text_max_length", text_max_length), ("question_max_length", question_max_length)):
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive int or None (no limit), got {value!r}.")
        for name, value in (("report_max_words", report_max_words), ("question_max_words", question_max_words)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        self.text_max_length = text_max_length
        self.question_max_length = question_max_length
        self.report_max_words = report_max_words
        self.question_max_words = question_max_words
        self.normalize_reports = normalize_reports
        self.normalize_questions = normalize_questions
        self.normalize_answers = normalize_answers
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, config, tokenizer_dir) -> "M2I2Processor":
        """The default processor of a model built from `config` (training from scratch, conversion): the
        `default_tokenizer` files in `tokenizer_dir` and the config's `vision_config.image_size` (256 for
        pre-training, 384 for VQA).

        Raises ValueError when the config's special-token ids or vocabulary size disagree with the tokenizer's."""
        image_size = getattr(getattr(config, "vision_config", None), "image_size", None)
        if image_size is None:
            raise ValueError(f"{type(config).__name__} has no vision_config.image_size; pass an M2I2 config.")
        processor = cls.from_vocab_file(os.path.join(tokenizer_dir, "vocab.txt"), image_size=image_size)
        processor.check_model_config(config)
        return processor

    @classmethod
    def from_vocab_file(
        cls, vocab_file, image_size=PRETRAINING_IMAGE_SIZE, **image_processor_kwargs
    ) -> "M2I2Processor":
        """The M2I2 processor built offline from a bert-base-uncased `vocab.txt` (one token per line)."""
        tokenizer = load_wordpiece_tokenizer(vocab_file)
        image_processor = M2I2ImageProcessor(size={"height": image_size, "width": image_size}, **image_processor_kwargs)
        return cls(image_processor=image_processor, tokenizer=tokenizer)

    def for_evaluation(self) -> "M2I2Processor":
        """This processor with the original's test-time question settings (`rad_dataset(split='test')` and the
        `evaluation` of `train_rad.py`): `pre_question` keeps 50 words and the question's tokens are not truncated.
        Images, captions and answers are encoded as before."""
        settings = {name: getattr(self, name) for name in SETTINGS}
        settings.update(question_max_words=TEST_QUESTION_MAX_WORDS, question_max_length=None)
        return type(self)(image_processor=self.image_processor, tokenizer=self.tokenizer, **settings)

    def check_model_config(self, config) -> None:
        """Raise ValueError when `config` (or its `text_config`) names other special-token ids than this tokenizer's
        (`bos_token_id` is `[CLS]`, which starts every answer, and `eos_token_id` `[SEP]`), or has fewer word
        embeddings than the tokenizer has tokens."""
        tokenizer = self.tokenizer
        expected = {
            "pad_token_id": tokenizer.pad_token_id,
            "cls_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "mask_token_id": tokenizer.mask_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        }
        for source, prefix in ((config, ""), (getattr(config, "text_config", None), "text_config.")):
            for name, token_id in expected.items():
                value = getattr(source, name, None)
                if value is not None and value != token_id:
                    raise ValueError(
                        f"the model config's {prefix}{name}={value} but the tokenizer's is {token_id}: the config was "
                        "made for another tokenizer; build the processor from that tokenizer or fix the config."
                    )
        text_config = getattr(config, "text_config", None)
        vocab_size = getattr(text_config, "vocab_size", getattr(config, "vocab_size", None))
        if vocab_size is not None and vocab_size < len(tokenizer):
            raise ValueError(
                f"the model config's vocab_size={vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens."
            )

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
            images: one image or a list/batch, see [`M2I2ImageProcessor`].
            text (`str` or `list[str]`): captions/reports, or questions with `text_kind="question"`.
            text_target (`str` or `list[str]`): answers to train the answer decoder on (`text_kind="question"`).
            text_kind (`"report"` or `"question"`): what `text` holds.
            generation_prompt (`bool`): add the answer decoder's start `[CLS]` for `generate()` (questions only).
            padding (`"longest"`, `"max_length"`, `True` or `False`): padding of each encoded text.
            truncation (`bool`): keep the first wordpieces that fit `max_length` (as the original's tokenizer call;
                answers keep their closing `[SEP]`); when `False` a longer text raises ValueError.
            max_length (`int`): length limit of every text of the call, special tokens included; defaults per
                layout: `text_max_length` (25) for reports, `question_max_length` (25) for questions, none for
                answers (as the original).
            return_tensors (`"pt"`, `"np"` or `None`): `None` gives python lists for the text (pixel values stay a
                tensor).
            padding_side (`"right"` or `"left"`): defaults to right (left for the generation prompt).
            pad_to_multiple_of (`int`): round the padded length up to a multiple of this.
            generator: accepted for the collator protocol (medvlp_hf.data.collators.base); M2I2's targets are
                deterministic.
            images_kwargs: overrides of the image processor's settings (`size`, `do_resize`, ...).

        Raises:
            ValueError: an unknown `text_kind`, a `text_target` or `generation_prompt` for reports, texts over
                `max_length` with `truncation=False`, a number of images other than the number of texts.
        """
        if text_kind not in TEXT_KINDS:
            raise ValueError(f"text_kind must be one of {TEXT_KINDS}, got {text_kind!r}.")
        if text_kind == "report" and (text_target is not None or generation_prompt):
            raise ValueError(
                "M2I2 has no report decoder (captions train ITC, ITM and MLM, whose masking M2I2ForPreTraining draws "
                "itself); `text_target` and `generation_prompt` encode VQA answers: pass text_kind='question'."
            )
        if text_target is not None and generation_prompt:
            raise ValueError(
                "generation_prompt=True encodes a start for generate(); a `text_target` is a training target."
            )
        if images is None and text is None and text_target is None:
            raise ValueError("M2I2Processor needs images, text or both (or a text_target).")
        unknown = sorted(set(images_kwargs) - set(self.image_processor.valid_kwargs.__annotations__))
        if unknown:
            raise TypeError(f"M2I2Processor got unexpected keyword arguments {unknown}.")
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
        if text is not None:
            data.update(self._encode(text_kind, self._normalized(text, text_kind), return_tensors, **text_kwargs))
        if generation_prompt:
            count = len(data["input_ids"] if text is not None else data["pixel_values"])
            starts = self._encode("answer_start", [""] * count, return_tensors, **text_kwargs)
            data.update({f"decoder_{key}": value for key, value in starts.items()})
        if text_target is not None:
            data.update(self._encode_answers(text_target, return_tensors, text_kwargs))
        check_counts(data)
        return BatchFeature(data=data)

    def encode_answer_candidates(self, answers, normalize=None, return_tensors="pt") -> BatchFeature:
        """A candidate answer list for `M2I2ForVQA.rank_answers`: `answer_input_ids` / `answer_attention_mask` (A, La),
        each row `[CLS] a_1..a_n [SEP]`, right-padded and never truncated, as `train_rad.py`'s `evaluation` tokenises
        `answer + '[SEP]'` for every answer of the list.

        Args:
            answers (`list[str]`): the candidates, in the order whose indices `rank_answers` returns.
            normalize (`bool`, defaults to `normalize_answers`): apply `preprocess_answer` first, so that the
                candidates are written as the training answers were. The original passes its `answer_list.json`
                as is; the released lists are already normalised (VQA-RAD's 458 answers are unchanged by it).
                Candidates that normalise to the same text get the same score.
        """
        normalize = self.normalize_answers if normalize is None else normalize
        texts = [preprocess_answer(answer) for answer in text_list(answers)] if normalize else answers
        encoded = self._encode("answer", texts, return_tensors, padding_side="right")
        return BatchFeature(
            data={"answer_input_ids": encoded["input_ids"], "answer_attention_mask": encoded["attention_mask"]}
        )

    def _normalized(self, text, kind) -> list[str]:
        """The texts as the original's datasets hand them to the tokenizer: `pre_caption` for reports,
        `pre_question` for questions, `preprocess_answer` for answers (each when its `normalize_*` option is on)."""
        texts = text_list(text)
        if kind == "report" and self.normalize_reports:
            return [pre_caption(t, self.report_max_words) for t in texts]
        if kind == "question" and self.normalize_questions:
            return [pre_question(t, self.question_max_words) for t in texts]
        if kind == "answer" and self.normalize_answers:
            return [preprocess_answer(t) for t in texts]
        return texts

    def _layout(self, layout_name):
        """(leading ids, closing ids, default max_length, description) of a layout: `report` and `question` texts,
        `answer` targets and candidates, `answer_start` for generate()."""
        cls, sep = [self.tokenizer.cls_token_id], [self.tokenizer.sep_token_id]
        layouts = {
            "report": (cls, [], self.text_max_length, "[CLS] ..."),
            "question": (cls, [], self.question_max_length, "[CLS] ..."),
            "answer": (cls, sep, None, "[CLS] ... [SEP]"),
            "answer_start": (cls, [], None, "[CLS]"),
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
        """Texts -> `{"input_ids", "attention_mask"}` in a layout of `_layout`; the answer start is left-padded by
        default."""
        leading, closing, default_max_length, layout = self._layout(layout_name)
        if layout_name == "answer_start" and padding_side is None:
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

    def _encode_answers(self, text, return_tensors, text_kwargs) -> dict:
        """Answers -> the decoder's `decoder_input_ids` / `decoder_attention_mask` `[CLS] a_1..a_n [SEP]` and `labels`
        (-100 at the leading `[CLS]`, which is given and never predicted, and at padding)."""
        encoded = self._encode("answer", self._normalized(text, "answer"), "pt", **text_kwargs)
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        real = mask.bool()
        start = real & (mask.cumsum(dim=1) == 1)
        labels = ids.masked_fill(~real | start, IGNORE_INDEX)
        encoded = {"decoder_input_ids": ids, "decoder_attention_mask": mask, "labels": labels}
        return convert_tensors(encoded, return_tensors)


# --- the original's text normalisation --------------------------------------------------------------------------

# `pre_question`: the answer-type markers VQA-RAD questions may end with. The original also tests for "? - open" but
# assigns the stripped text to an unused variable, so that marker stays (and loses its "?" below): "... - open".
QUESTION_TYPE_MARKERS = ("? -yes/no", "? -open")
# Then, in this order: drop commas and question marks, split the possessive, drop ellipses, unify "x ray", drop dots.
QUESTION_REPLACEMENTS = ((",", ""), ("?", ""), ("'s", " 's"), ("...", ""), ("x ray", "x-ray"), (".", ""))
# `pre_caption`: the characters it deletes, and runs of whitespace it writes as one space.
CAPTION_DELETED = re.compile(r"[,.'!?\"()*#:;~]")
WHITESPACE_RUN = re.compile(r"\s{2,}")


def pre_question(question: str, max_words: int = QUESTION_MAX_WORDS) -> str:
    """A VQA question as M2I2's datasets give it to the tokenizer (`pre_question` of `dataset/medvqa_dataset.py`):
    lower-cased; the markers "? -yes/no" and "? -open" removed (not "? - open", see `QUESTION_TYPE_MARKERS`); commas,
    question marks, "..." and dots removed, "'s" written " 's", "x ray" written "x-ray"; trailing spaces stripped;
    then cut to the first `max_words` words of a split on single spaces (30 in training, 50 at test)."""
    question = question.lower()
    for marker in QUESTION_TYPE_MARKERS:
        question = question.replace(marker, "")
    for old, new in QUESTION_REPLACEMENTS:
        question = question.replace(old, new)
    return first_words(question.rstrip(" "), max_words)


def pre_caption(caption: str, max_words: int = REPORT_MAX_WORDS) -> str:
    """A caption as M2I2's pre-training dataset gives it to the tokenizer (`pre_caption` of `dataset/utils.py`):
    lower-cased; `, . ' ! ? " ( ) * # : ; ~` removed; "-" and "/" written as spaces; "<person>" as "person"; runs of
    whitespace as one space; a trailing newline and surrounding spaces stripped; then cut to the first `max_words`
    words (30)."""
    caption = CAPTION_DELETED.sub("", caption.lower()).replace("-", " ").replace("/", " ")
    caption = WHITESPACE_RUN.sub(" ", caption.replace("<person>", "person"))
    return first_words(caption.rstrip("\n").strip(" "), max_words)


def first_words(text: str, max_words: int) -> str:
    """`text` cut to its first `max_words` words, words being what a split on single spaces gives (as the
    original: two spaces in a row count an empty word)."""
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


# `preprocess_answer`: the VQA-v2 evaluation's answer normalisation as M2I2's copy runs it.
ANSWER_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# The original passes `re.UNICODE` (= 32) as the third argument of `Pattern.sub`, which is its `count`: at most the
# first 32 such periods are removed.
PERIODS_REMOVED = 32
ARTICLES = ("a", "an", "the")
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
# The contractions whose apostrophes the table restores. The table keys every spelling with exactly one apostrophe
# left out ("dont" -> "don't", "couldnt've" and "couldn'tve" -> "couldn't've", not "couldntve"); the first-person
# forms are keyed with a capital "I" there and never match the lower-cased words, so they are left out here.
CONTRACTIONS_WITH_APOSTROPHES = (
    "'ow's'at", "'twas", "ain't", "aren't", "can't", "could've", "couldn't", "couldn't've", "didn't", "doesn't",
    "don't", "hadn't", "hadn't've", "hasn't", "haven't", "he'd", "he'd've", "he's", "how'd", "how'll", "how's",
    "isn't", "it'd", "it'd've", "it'll", "ma'am", "might've", "mightn't", "mightn't've", "must've", "mustn't",
    "needn't", "not've", "o'clock", "oughtn't", "shan't", "she'd've", "should've", "shouldn't", "shouldn't've",
    "somebody'd've", "somebody'll", "somebody's", "someone'd", "someone'd've", "someone'll", "someone's",
    "something'd", "something'd've", "something'll", "that's", "there'd", "there'd've", "there're", "there's",
    "they'd", "they'd've", "they'll", "they're", "they've", "wasn't", "we'd've", "we've", "weren't", "what'll",
    "what're", "what's", "what've", "when's", "where'd", "where's", "where've", "who'd", "who'd've", "who'll",
    "who's", "who've", "why'll", "why're", "why's", "won't", "would've", "wouldn't", "wouldn't've", "y'all",
    "y'all'd've", "y'all'll", "you'd", "you'd've", "you'll", "you're", "you've",
)
# The table's irregular entries: "let's" and "she's" map to themselves (so "lets" and "shes" stay), and
# "somebody'd" maps to "somebodyd".
IRREGULAR_CONTRACTIONS = {"somebody'd": "somebodyd"}


def spellings_missing_one_apostrophe(word: str) -> list[str]:
    """`word` with one of its apostrophes left out, for each of them ("y'all'll" -> "yall'll", "y'allll")."""
    return [word[:index] + word[index + 1 :] for index, char in enumerate(word) if char == "'"]


CONTRACTIONS = {
    spelling: word for word in CONTRACTIONS_WITH_APOSTROPHES for spelling in spellings_missing_one_apostrophe(word)
} | IRREGULAR_CONTRACTIONS


def preprocess_answer(answer) -> str:
    """A VQA answer as M2I2's datasets give it to the answer decoder (`preprocess_answer` of
    `dataset/medvqa_dataset.py`), any type (VQA-RAD stores some answers as numbers) via `str`:
    1. punctuation: each of `; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !` is deleted when the answer has it next to a
       space or contains a digit,digit group, otherwise written as a space; then the first 32 periods not followed by a
       digit are deleted;
    2. lower-cased and split on whitespace: number words "none"/"zero".."ten" become digits, the articles a/an/the are
       dropped, contractions get their apostrophes back (`CONTRACTIONS`); joined with single spaces;
    3. commas removed and "x ray" written "xray"."""
    text = str(answer)
    delete_all = DIGIT_COMMA_DIGIT.search(text) is not None
    spaced = text
    for mark in ANSWER_PUNCTUATION:
        deleted = delete_all or f"{mark} " in text or f" {mark}" in text
        spaced = spaced.replace(mark, "" if deleted else " ")
    spaced = PERIOD_NOT_BEFORE_DIGIT.sub("", spaced, count=PERIODS_REMOVED)
    words = [NUMBER_WORDS.get(word, word) for word in spaced.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words).replace(",", "").replace("x ray", "xray")


# --- shared helpers ---------------------------------------------------------------------------------------------


def check_m2i2_special_tokens(tokenizer) -> None:
    """Raise ValueError unless `tokenizer`'s cls/sep/mask/pad tokens are BERT's `[CLS]`, `[SEP]`, `[MASK]`, `[PAD]`:
    M2I2 writes ALBEF's layouts (`[CLS] text`, `[CLS] answer [SEP]`) and its MLM writes `[MASK]`."""
    if tokenizer is None:
        return
    wrong = {
        role: getattr(tokenizer, role, None)
        for role, token in BERT_SPECIAL_TOKENS.items()
        if str(getattr(tokenizer, role, None)) != token
    }
    if wrong:
        found = ", ".join(f"{role}={value!r}" for role, value in wrong.items())
        raise ValueError(
            f"the tokenizer has {found}; M2I2 needs BERT's special tokens {BERT_SPECIAL_TOKENS} (its texts are "
            "`[CLS] text`, its answers `[CLS] answer [SEP]`, its MLM writes [MASK]). Use a BERT WordPiece tokenizer, "
            "e.g. M2I2Processor.from_vocab_file(medvlp_hf.resources.bert_base_uncased_vocab_file())."
        )


# Copied from medvlp_hf.models.miss.processing_miss.check_counts with MISS->M2I2
def check_counts(data: dict) -> None:
    """Raise ValueError unless the images, texts and targets of one call are equally many."""
    counts = {key: len(data[key]) for key in ("pixel_values", "input_ids", "labels") if key in data}
    if len(set(counts.values())) > 1:
        names = {"pixel_values": "images", "input_ids": "texts", "labels": "targets"}
        found = " and ".join(f"{count} {names[key]}" for key, count in counts.items())
        raise ValueError(f"got {found}; M2I2 pairs one image with one text (and its target).")


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


__all__ = ["M2I2Processor", "pre_caption", "pre_question", "preprocess_answer"]
