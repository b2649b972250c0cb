"""The "How to use" code of every model card runs as written against a tiny checkpoint of that head, loaded by repo
id from a cache filled with seed_hub_cache, offline."""
import contextlib
import io
import re

import numpy as np
import pytest
from huggingface_hub import constants
from PIL import Image

import medvlp_hf
from medvlp_hf import M2I2Config, MedViLLConfig, MISSConfig
from medvlp_hf.hub import card_templates, render_model_card, seed_hub_cache
from medvlp_hf.models.m2i2 import M2I2Processor
from medvlp_hf.models.medvill import MedViLLProcessor
from medvlp_hf.models.miss import MISSProcessor
from medvlp_hf.resources import bert_base_uncased_vocab_file


def medvill_checkpoint():
    config = MedViLLConfig.from_preset("tiny", num_labels=3, id2label={0: "yes", 1: "no", 2: "left"},
                                       label2id={"yes": 0, "no": 1, "left": 2})
    return config, MedViLLProcessor.from_vocab_file(bert_base_uncased_vocab_file(), image_size=config.image_size)


def miss_checkpoint():
    config = MISSConfig.from_preset("tiny")
    return config, MISSProcessor.from_vocab_file(bert_base_uncased_vocab_file(),
                                                 image_size=config.vision_config.image_size)


def m2i2_checkpoint():
    config = M2I2Config.from_preset("tiny")
    return config, M2I2Processor.from_vocab_file(bert_base_uncased_vocab_file(),
                                                 image_size=config.vision_config.image_size)


CHECKPOINTS = {"medvill": medvill_checkpoint, "miss": miss_checkpoint, "m2i2": m2i2_checkpoint}
HEADS = [(model_type, architecture) for model_type in CHECKPOINTS
         for architecture in sorted(card_templates.load_model_template(model_type).metadata["architectures"])]


def test_every_model_card_template_is_covered():
    assert sorted(CHECKPOINTS) == card_templates.available_model_types()


# a snippet must not make its reader's first run print an autograd warning (float() of a loss that requires grad)
@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad:UserWarning")
@pytest.mark.parametrize("model_type, architecture", HEADS)
def test_card_usage_snippet_runs(model_type, architecture, tmp_path, monkeypatch):
    config, processor = CHECKPOINTS[model_type]()
    model = getattr(medvlp_hf, architecture)(config).eval()
    model.save_pretrained(tmp_path / "saved")
    processor.save_pretrained(tmp_path / "saved")
    repo_id = f"medzoo-test/card-{architecture.lower()}"
    seed_hub_cache(tmp_path / "saved", repo_id, cache_dir=constants.HF_HUB_CACHE)

    card = render_model_card(model_type, architecture=architecture, repo_id=repo_id, datasets=["demo"],
                             training_command="python examples/run_vqa.py --dataset demo")
    snippet = re.search(r"```python\n(.*?)```", card, flags=re.S).group(1)
    pixels = np.random.default_rng(0).integers(0, 256, size=(80, 72), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "chest_xray.png")
    monkeypatch.chdir(tmp_path)
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet, f"usage of {architecture}", "exec"), namespace)
    assert isinstance(namespace["model"], getattr(medvlp_hf, architecture))
    if "print(" in snippet:
        assert printed.getvalue().strip()
