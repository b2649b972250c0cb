"""Parity records made with the authors' code: the cases and inputs the converter defines
(`parity_cases` / `parity_inputs` of medvlp_hf/conversion/convert_medvill_original_checkpoint.py), translated into
the original layout by their own input pipelines, run through their model, and the outputs translated back to
medvlp-hf's layout (text stream from the visual [SEP]; generated sequences start with it).
"""

import torch

import original
from medvlp_hf.conversion import convert_medvill_original_checkpoint as converter
from medvlp_hf.conversion import parity

KIND_FAMILY = {"pretraining": "pretraining", "vqa": "downstream", "report_generation": "downstream",
               "retrieval": "retrieval", "classification": "classification"}


def original_outputs(kind, run, state_dict, config, tensors) -> dict:
    """{case name: {output name: tensor in medvlp-hf layout}} of the original `kind` model on the record inputs."""
    cases = converter.parity_cases(kind, config)
    inputs = {argument: tensors[case.input_key(argument)] for case in cases for argument in case.inputs}
    pixel_values = inputs["pixel_values"].float()
    words = [run.words(row[1:length - 1]) for row, length in zip(inputs["input_ids"], inputs["attention_mask"].sum(1))]
    stream_length = inputs["input_ids"].shape[1]
    if kind == "pretraining":
        cells = inputs["image_token_indices"]
        dataset = original.pretraining_dataset(run, config.attention_mask_type, stream_length - 2, len(cells),
                                               [" ".join(w) for w in words])
        dataset.random_word = lambda tokens: (tokens, [-100] * len(tokens))  # the record's text, unmasked
        batch = original.pretraining_batch(dataset, [0] * len(words))
        _check_stream(batch[1], inputs["input_ids"][:, 1:])
        model = original.pretraining_model(run, state_dict, len(cells))
        logits, itm_logits = original.pretraining_forward(model, batch, pixel_values, cells, config.num_image_tokens)
        return {"mlm_itm": {"logits": logits[:, len(cells) + 1:], "itm_logits": itm_logits}}
    if kind in ("vqa", "report_generation"):
        return _downstream_outputs(kind, run, state_dict, config, inputs, words, pixel_values)
    if kind == "retrieval":
        model = original.retrieval_model(run, state_dict, config.num_image_tokens)
        batch = original.retrieval_inputs(run, [" ".join(w) for w in words], config.num_image_tokens, stream_length - 2)
        _check_stream(batch[1], inputs["input_ids"][:, 1:])
        logits = original.retrieval_forward(model, pixel_values, batch)
        return {"matching": {"logits": logits, "scores": logits.softmax(-1)[:, 1]}}
    labels = [config.id2label[i] for i in range(config.num_labels)]
    model = original.classification_model(run, state_dict, config.num_image_tokens, labels)
    batch = original.classification_inputs(run, [" ".join(w) for w in words], config.num_image_tokens, labels)
    _check_stream(batch[0], inputs["input_ids"][:, 1:])
    return {"diagnosis": {"logits": original.classification_forward(model, pixel_values, batch)}}


def _downstream_outputs(kind, run, state_dict, config, inputs, words, pixel_values):
    cells = config.num_image_tokens
    stream = inputs["input_ids"]
    model = original.downstream_model(run, kind, state_dict, cells, config.num_labels)
    mode = "bi" if kind == "vqa" else "s2s"
    pipeline = original.seq2seq_pipeline(run, kind, mode, cells, stream.shape[1] - 2)
    input_ids, segment_ids, input_mask, *_ = original.seq2seq_inputs(run, pipeline, words, seeds=[0] * len(words))
    joint = torch.cat([input_ids[:, : cells + 1], stream], dim=1)
    if kind == "vqa":
        _check_stream(input_ids[:, cells + 1:], stream)
        labels = torch.zeros(len(words), config.num_labels)
        logits, _, _ = original.vqa_forward(model, pixel_values, joint, segment_ids, input_mask, labels,
                                            torch.zeros(len(words), dtype=torch.long))
        return {"answers": {"logits": logits}}
    # the pipeline masked some words at random; the record's own [MASK]s replace them (the mask depends on lengths only)
    built = input_ids[:, cells + 1:]
    unmasked = (built != config.mask_token_id) & (stream != config.mask_token_id)
    _check_stream(built[unmasked], stream[unmasked])
    positions = torch.arange(cells + 1, joint.shape[1]).expand(len(words), -1)
    logits, _ = original.masked_lm_forward(model, pixel_values, joint, segment_ids, input_mask,
                                           torch.zeros_like(positions), positions, torch.ones_like(positions))
    greedy = original.seq2seq_pipeline(run, kind, "s2s", cells, converter.PARITY_DECODING_STEPS + 1)
    tokens, step_logits = original.greedy_decode(run, model, greedy, pixel_values, converter.PARITY_DECODING_STEPS,
                                                 cells, config.mask_token_id, sep_id=config.sep_token_id,
                                                 pad_id=config.pad_token_id)
    sequences = torch.cat([torch.full((len(words), 1), config.sep_token_id), tokens], dim=1)
    return {"masked_lm": {"logits": logits}, "greedy": {"sequences": sequences, "logits": step_logits}}


def _check_stream(original_ids, record_ids):
    """The original pipeline must have built exactly the record's text (else the comparison is meaningless)."""
    if not torch.equal(original_ids, record_ids):
        raise AssertionError(f"the original pipeline built {original_ids.tolist()}, the record holds {record_ids.tolist()}")


def build_record(kind, architecture, config, outputs, tensors, reference) -> parity.ParityRecord:
    """The record of `outputs` (from `original_outputs`) on `tensors`, reduced as the cases say."""
    cases = converter.parity_cases(kind, config)
    expected = {}
    for case in cases:
        for name, spec in case.outputs.items():
            for reduction in spec["reduce"]:
                expected[f"expected.{case.name}.{name}.{reduction}"] = parity.reduce(outputs[case.name][name], reduction)
    return parity.ParityRecord("medvill", architecture, cases, {**tensors, **expected}, reference,
                               config=converter.parity_config_fields(kind, config))

