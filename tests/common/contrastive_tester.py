"""The checks every CLIP-style zoo model passes, written once: a base model whose `forward` compares any number of
images with any number of texts (so `AutoModelForZeroShotImageClassification` and the stock zero-shot pipeline work)
and a retrieval head scoring pairs with its ITM head on their joint encoding (ALBEF/BLIP-style models: MISS, M2I2),
which offers the two-stage retrieval protocol (`medvlp_hf.training.two_stage_retrieval`) and trains on matched pairs
with `return_loss=True` (ITC + ITM on hard negatives).

A model's test file adds `class TestXContrastive(ContrastiveTesterMixin): tester = <its ModelTester>`; the base model
and the `...ForRetrieval` head come from the tester's classes. The models have `get_image_features`,
`get_text_features`, `get_joint_features`, `vision_model`, `itm_head` and `config.vision_config.image_size`; the
retrieval head also `get_image_hidden_states` and `score_pairs`.
"""

import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from transformers import AutoModelForZeroShotImageClassification, BertTokenizer, BlipImageProcessor, pipeline

import medvlp_hf
from medvlp_hf.training.two_stage_retrieval import supports_two_stage_retrieval, two_stage_retrieval


class ContrastiveTesterMixin:
    tester = None  # the model's ModelTester

    def _build(self, suffix):
        prefix = self.tester.base_model_class.__name__.removesuffix("Model")
        model_class = next(cls for cls in self.tester.model_classes if cls.__name__ == prefix + suffix)
        model = self.tester.build(model_class)
        return model, self.tester.prepare_inputs(model.config, batch_size=3, model_class=model_class)

    def test_base_model_gives_clip_style_logits_for_any_numbers_of_images_and_texts(self):
        model, inputs = self._build("Model")
        with torch.no_grad():
            output = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           pixel_values=inputs["pixel_values"][:2])
            image = F.normalize(model.get_image_features(inputs["pixel_values"][:2]), dim=-1)
            text = F.normalize(model.get_text_features(inputs["input_ids"], inputs["attention_mask"]), dim=-1)
        assert model.get_image_features(inputs["pixel_values"]).shape == (3, model.config.projection_dim)
        torch.testing.assert_close(output.logits_per_image, image @ text.T / model.config.itc_temperature)
        torch.testing.assert_close(output.logits_per_text, output.logits_per_image.T)
        with pytest.raises(ValueError, match="get_image_features"):
            model(pixel_values=inputs["pixel_values"])

    def test_retrieval_scores_are_the_itm_head_on_the_joint_encoding(self):
        model, inputs = self._build("ForRetrieval")
        with torch.no_grad():
            output = model(**inputs)
            joint = model.get_joint_features(**inputs).last_hidden_state[:, 0]
            states = model.vision_model(inputs["pixel_values"]).last_hidden_state
            from_states = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                image_hidden_states=states)
        torch.testing.assert_close(output.logits, model.itm_head(joint))
        torch.testing.assert_close(output.scores, output.logits.softmax(-1)[:, 1])
        torch.testing.assert_close(from_states.logits, output.logits)

    def test_retrieval_head_offers_the_two_stage_protocol(self):
        model, inputs = self._build("ForRetrieval")
        base, _ = self._build("Model")
        assert supports_two_stage_retrieval(model) and not supports_two_stage_retrieval(base)
        pixels, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
        with torch.no_grad():
            states = model.get_image_hidden_states(pixels)
            scores = model.score_pairs(states, ids, mask)
            # every (image, text) pair through forward: image i against all texts
            matrix = torch.stack([
                model(input_ids=ids, attention_mask=mask, pixel_values=pixels[i : i + 1].expand_as(pixels)).logits[:, 1]
                for i in range(3)
            ])
            result = two_stage_retrieval(model, pixels, ids, mask, k=3, ks=(1, 3))
        torch.testing.assert_close(states, model.vision_model(pixels).last_hidden_state)
        torch.testing.assert_close(model.get_image_features(pixels), model.vision_proj(states[:, 0]))
        torch.testing.assert_close(scores, matrix.diagonal())
        assert torch.equal(result.image_rankings, matrix.argsort(dim=1, descending=True))
        assert torch.equal(result.text_rankings, matrix.T.argsort(dim=1, descending=True))

    def test_retrieval_training_on_matched_pairs_is_itc_plus_itm_of_the_pairs_and_their_negatives(self):
        model, inputs = self._build("ForRetrieval")
        negative_images, negative_texts = torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1])
        output = model(**inputs, return_loss=True, negative_image_indices=negative_images,
                       negative_text_indices=negative_texts)
        pixels, ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
        with torch.no_grad():
            image = F.normalize(model.get_image_features(pixels), dim=-1)
            text = F.normalize(model.get_text_features(ids, mask), dim=-1)
            similarity = image @ text.T / model.config.itc_temperature
            itm = torch.cat([
                model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits,
                model(input_ids=ids, attention_mask=mask, pixel_values=pixels[negative_images]).logits,
                model(input_ids=ids[negative_texts], attention_mask=mask[negative_texts], pixel_values=pixels).logits,
            ])
        labels = torch.tensor([1] * 3 + [0] * 6)
        torch.testing.assert_close(output.logits_per_image, similarity)
        torch.testing.assert_close(output.itc_loss, (F.cross_entropy(similarity, torch.arange(3))
                                                     + F.cross_entropy(similarity.T, torch.arange(3))) / 2)
        torch.testing.assert_close(output.logits, itm)
        assert torch.equal(output.itm_labels, labels)
        torch.testing.assert_close(output.itm_loss, F.cross_entropy(itm, labels))
        torch.testing.assert_close(output.loss, output.itc_loss + output.itm_loss)
        output.loss.backward()
        for name in ("itm_head.weight", "vision_proj.weight", "text_proj.weight", "temperature"):
            assert bool(model.get_parameter(name).grad.abs().sum() > 0), name

    def test_retrieval_training_batches_without_a_negative_or_images_get_clear_errors(self):
        model, inputs = self._build("ForRetrieval")
        with pytest.raises(ValueError, match="an image has no other"):
            model(**inputs, return_loss=True, image_ids=torch.tensor([4, 4, 4]))
        with pytest.raises(ValueError, match="only 1"):
            model(**{key: value[:1] for key, value in inputs.items()}, return_loss=True)
        with pytest.raises(ValueError, match="image_ids has 2 row"):
            model(**inputs, return_loss=True, image_ids=torch.tensor([0, 1]))
        with pytest.raises(ValueError, match="pass texts"):
            model(input_ids=inputs["input_ids"], return_loss=True)
        with pytest.raises(ValueError, match="got 2 image"):
            model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:2], return_loss=True)

    def test_zero_shot_pipeline_and_auto_class(self, tmp_path):
        model, _ = self._build("Model")
        model.save_pretrained(tmp_path)
        assert type(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path)) is type(model)
        size = model.config.vision_config.image_size
        tokenizer = BertTokenizer(str(medvlp_hf.bert_base_uncased_vocab_file()))
        image_processor = BlipImageProcessor(size={"height": size, "width": size})
        classifier = pipeline("zero-shot-image-classification", model=model, tokenizer=tokenizer,
                              image_processor=image_processor)
        image = Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy())
        labels = ["effusion", "pneumothorax", "no finding"]
        result = classifier(image, candidate_labels=labels)
        texts = tokenizer([f"This is a photo of {label}." for label in labels], padding=True, return_tensors="pt")
        pixels = image_processor(images=[image], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            expected = model(input_ids=texts["input_ids"], attention_mask=texts["attention_mask"],
                             pixel_values=pixels).logits_per_image.softmax(-1)[0]
        scores = {entry["label"]: entry["score"] for entry in result}
        assert scores == pytest.approx(dict(zip(labels, expected.tolist())))
