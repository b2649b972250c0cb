"""Render and save model cards: Hub metadata plus the sections a medical model's card must have.

Every card states its intended use and that it is not for clinical use, names its training data and
the data's licence, says how the checkpoint was produced (training command and/or conversion), lists
evaluation results (also as `model-index` metadata the Hub displays) and the parity status of a
conversion, and cites the paper. Model-specific text comes from `templates/models/<model_type>.md`.
"""
import math
import numbers
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData
from huggingface_hub.utils import validate_repo_id

from .card_templates import load_dataset_info, load_layout, load_model_template, split_front_matter

BASE_TAGS = ("medical", "vision-language")
PARITY_STATUSES = ("passed", "failed", "not verified")
EVAL_REQUIRED_KEYS = ("dataset", "split", "metric", "value")
EVAL_OPTIONAL_KEYS = ("task", "dataset_name", "metric_name")
CONVERSION_REQUIRED_KEYS = ("source_checkpoint", "script", "command", "parity_status", "max_abs_diffs")
CONVERSION_OPTIONAL_KEYS = ("tolerance", "reference")
README_NAME = "README.md"

_LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.\-]*")


def render_model_card(
    model_type,
    *,
    architecture=None,
    repo_id=None,
    base_model=None,
    datasets=(),
    dataset_licenses=None,
    license=None,
    pipeline_tag=None,
    eval_results=None,
    training_command=None,
    conversion=None,
    tags=(),
):
    """Return the card (README.md text) of one checkpoint.

    model_type: a model with a card template (e.g. "medvill"). architecture: the head class saved in
    the checkpoint (default: the template's). datasets: ids of the training data; each must be a known
    dataset or have its licence in `dataset_licenses` ({id: licence}). license / pipeline_tag default to
    the template's. eval_results: [{"dataset", "split", "metric", "value", optional "task",
    "dataset_name", "metric_name"}]. training_command: the exact command that trained it.
    conversion: {"source_checkpoint", "script", "command", "parity_status" (one of PARITY_STATUSES),
    "max_abs_diffs" ({output: max |diff|}), optional "tolerance" (an absolute bound, or {"rtol", "atol"} as in
    `torch.testing.assert_close`) and "reference" (what the outputs were compared with)}. At least one of
    training_command and
    conversion is required, so every card says how its weights were produced.
    """
    if not isinstance(model_type, str):
        raise ValueError(f"model_type must be a string such as 'medvill', got {type(model_type).__name__}.")
    template = load_model_template(model_type)
    meta = template.metadata
    architecture = architecture or meta["default_architecture"]
    if architecture not in meta["architectures"]:
        raise ValueError(f"architecture {architecture!r} is not a {model_type} head; use one of {list(meta['architectures'])}.")
    head = meta["architectures"][architecture]
    pipeline_tag = _check_pipeline_tag(pipeline_tag or head["pipeline_tag"], meta)
    license = _check_license(license or meta["license"])
    for value in [repo_id, *_as_list(base_model)]:
        if value is not None:
            validate_repo_id(value)
    datasets = _check_datasets(datasets, dataset_licenses)
    results = [_check_eval_result(result, pipeline_tag, i) for i, result in enumerate(eval_results or ())]
    if training_command is None and conversion is None:
        raise ValueError("say how the checkpoint was produced: pass training_command= (the exact command line) "
                         "and/or conversion= (source checkpoint, script, command, parity status).")
    if training_command is not None and (not isinstance(training_command, str) or not training_command.strip()):
        raise ValueError("training_command must be the non-empty command line that trained the checkpoint.")
    conversion = _check_conversion(conversion) if conversion is not None else None

    model_name = repo_id.split("/")[-1] if repo_id else f"{model_type}-{architecture}"
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        pipeline_tag=pipeline_tag,
        datasets=[dataset_id for dataset_id, _ in datasets],
        base_model=base_model,
        tags=_unique([*BASE_TAGS, model_type, *meta["tags"], *tags]),
        model_name=model_name,
        eval_results=[_eval_result(result, datasets) for result in results] or None,
    )
    return load_layout().substitute(
        front_matter=card_data.to_yaml() + "\n",
        title=repo_id or model_name,
        model_description=template.sections["Model description"],
        checkpoint_description=_checkpoint_description(meta, architecture, head, base_model, datasets,
                                                       training_command, conversion),
        paper_link=_paper_link(meta["paper"]),
        code_link=f"<{meta['code']['url']}> ({meta['code']['license']} licence)",
        architecture=architecture,
        model_type=model_type,
        usage=head["usage"].strip().replace("$repo_id", repo_id or "path/to/checkpoint"),
        training_data=_training_data(datasets, meta, template.sections["Training data"]),
        procedure=_procedure(training_command, conversion),
        evaluation=_evaluation_table(results, datasets),
        parity=_parity(conversion),
        limitations=template.sections["Limitations and bias"],
        citation=meta["bibtex"].strip(),
    )


def save_model_card(card_text, folder):
    """Write the card as `<folder>/README.md` (the file the Hub shows); return its path."""
    if not isinstance(card_text, str) or not card_text.strip():
        raise ValueError("card_text must be the non-empty card, e.g. from render_model_card(...).")
    split_front_matter(card_text, "card_text")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / README_NAME
    path.write_text(card_text, encoding="utf-8")
    return path


def _check_pipeline_tag(pipeline_tag, meta):
    allowed = _unique(head["pipeline_tag"] for head in meta["architectures"].values())
    if pipeline_tag not in allowed:
        raise ValueError(f"pipeline_tag {pipeline_tag!r} does not fit {meta['display_name']}; use one of {allowed}.")
    return pipeline_tag


def _check_license(license):
    if not isinstance(license, str) or not _LICENSE_ID.fullmatch(license):
        raise ValueError(f"license must be a Hub licence id such as 'mit' or 'apache-2.0', got {license!r}.")
    return license


def _check_datasets(datasets, dataset_licenses):
    """Return [(id, {"name", "license", "url"})]; every dataset needs a known licence."""
    if isinstance(datasets, str):
        datasets = [datasets]
    known = load_dataset_info()
    extra = dict(dataset_licenses or {})
    checked = []
    for dataset_id in datasets:
        if dataset_id in extra:
            checked.append((dataset_id, {"name": dataset_id, "license": extra[dataset_id], "url": None}))
        elif dataset_id in known:
            checked.append((dataset_id, known[dataset_id]))
        else:
            raise ValueError(f"dataset {dataset_id!r} has no recorded licence: use one of {sorted(known)} or pass "
                             f"dataset_licenses={{{dataset_id!r}: '<licence>'}}.")
    if not checked:
        raise ValueError("datasets must name the training data (e.g. datasets=['vqa_rad']); the card states its licence.")
    return checked


def _check_eval_result(result, pipeline_tag, index):
    if not isinstance(result, dict):
        raise ValueError(f"eval_results[{index}] must be a dict with keys {list(EVAL_REQUIRED_KEYS)}.")
    _check_keys(result, EVAL_REQUIRED_KEYS, EVAL_OPTIONAL_KEYS, f"eval_results[{index}]")
    value = result["value"]
    if not _is_finite_number(value):
        raise ValueError(f"eval_results[{index}]['value'] must be a finite number, got {value!r}.")
    for key in set(result) - {"value"}:
        if not isinstance(result[key], str) or not result[key].strip():
            raise ValueError(f"eval_results[{index}][{key!r}] must be a non-empty string, got {result[key]!r}.")
    return {**result, "value": float(value), "task": result.get("task", pipeline_tag)}


def _check_conversion(conversion):
    if not isinstance(conversion, dict):
        raise ValueError(f"conversion must be a dict with keys {list(CONVERSION_REQUIRED_KEYS)}.")
    _check_keys(conversion, CONVERSION_REQUIRED_KEYS, CONVERSION_OPTIONAL_KEYS, "conversion")
    for key in ("source_checkpoint", "script", "command"):
        if not isinstance(conversion[key], str) or not conversion[key].strip():
            raise ValueError(f"conversion[{key!r}] must be a non-empty string, got {conversion[key]!r}.")
    if conversion["parity_status"] not in PARITY_STATUSES:
        raise ValueError(f"conversion['parity_status'] must be one of {PARITY_STATUSES}, got {conversion['parity_status']!r}.")
    diffs = conversion["max_abs_diffs"]
    if not isinstance(diffs, dict):
        raise ValueError("conversion['max_abs_diffs'] must map output names to max absolute differences.")
    for name, diff in diffs.items():
        if not _is_non_negative_number(diff):
            raise ValueError(f"conversion['max_abs_diffs'][{name!r}] must be a finite number >= 0, got {diff!r}.")
    if conversion["parity_status"] != "not verified" and not diffs:
        raise ValueError("conversion['max_abs_diffs'] is empty: a parity check that passed or failed measured something.")
    tolerance = conversion.get("tolerance")
    if isinstance(tolerance, dict):
        if set(tolerance) != {"rtol", "atol"} or not all(map(_is_non_negative_number, tolerance.values())):
            raise ValueError(f"conversion['tolerance'] as a dict needs finite numbers >= 0 under exactly 'rtol' and "
                             f"'atol', got {tolerance!r}.")
    elif tolerance is not None and not _is_non_negative_number(tolerance):
        raise ValueError(f"conversion['tolerance'] must be a finite number >= 0, got {tolerance!r}.")
    reference = conversion.get("reference")
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        raise ValueError(f"conversion['reference'] must say what the outputs were compared with, got {reference!r}.")
    # With a relative term the bound depends on each value, so only an absolute tolerance can be checked here.
    if conversion["parity_status"] == "passed" and tolerance is not None and not isinstance(tolerance, dict):
        over = {name: diff for name, diff in diffs.items() if diff > tolerance}
        if over:
            raise ValueError(f"conversion says parity passed, but {over} exceed the tolerance {tolerance}.")
    return conversion


def _is_finite_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_non_negative_number(value):
    return _is_finite_number(value) and value >= 0


def _check_keys(mapping, required, optional, source):
    missing = [key for key in required if key not in mapping]
    unknown = sorted(set(mapping) - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f"{source}: missing keys {missing}, unknown keys {unknown}; "
                         f"expected {list(required)} and optionally {list(optional)}.")


def _eval_result(result, datasets):
    return EvalResult(
        task_type=result["task"],
        dataset_type=result["dataset"],
        dataset_name=_dataset_name(result, datasets),
        dataset_split=result["split"],
        metric_type=result["metric"],
        metric_name=result.get("metric_name", result["metric"]),
        metric_value=result["value"],
    )


def _dataset_name(result, datasets):
    if "dataset_name" in result:
        return result["dataset_name"]
    names = {dataset_id: info["name"] for dataset_id, info in datasets}
    return names.get(result["dataset"], load_dataset_info().get(result["dataset"], {}).get("name", result["dataset"]))


def _checkpoint_description(meta, architecture, head, base_model, datasets, training_command, conversion):
    lines = [f"This checkpoint is `{architecture}`: {meta['display_name']} with {head['head']}."]
    if conversion is not None:
        lines.append(f"Its weights were converted from the original checkpoint `{conversion['source_checkpoint']}`.")
    names = ", ".join(info["name"] for _, info in datasets)
    bases = ", ".join(f"`{base}`" for base in _as_list(base_model))
    start = f" starting from {bases}" if bases else ""
    if training_command is not None:
        lines.append(f"It was trained with medvlp-hf{start} on {names}.")
    else:
        lines.append(f"The original weights were trained on {names}.")
    return " ".join(lines)


def _paper_link(paper):
    authors = ", ".join(paper["authors"])
    return f"[{paper['title']}]({paper['url']}), {authors}. {paper['venue']}, {paper['year']}."


def _training_data(datasets, meta, model_text):
    rows = [f"| {info['name']} | `{dataset_id}` | {info['license']} | {_link(info['url'])} |" for dataset_id, info in datasets]
    table = "\n".join(["| Dataset | id | Licence | Source |", "|---|---|---|---|", *rows])
    return f"This checkpoint was trained on:\n\n{table}\n\n{meta['display_name']}'s original training data, for reference:\n\n{model_text}"


def _procedure(training_command, conversion):
    parts = []
    if conversion is not None:
        parts.append(f"Converted from the original checkpoint `{conversion['source_checkpoint']}` with "
                     f"`{conversion['script']}`:\n\n```bash\n{conversion['command'].strip()}\n```")
    if training_command is not None:
        parts.append(f"Trained with medvlp-hf:\n\n```bash\n{training_command.strip()}\n```")
    return "\n\n".join(parts)


def _evaluation_table(results, datasets):
    if not results:
        return "No evaluation results were recorded for this checkpoint."
    rows = [f"| {r['task']} | {_dataset_name(r, datasets)} | {r['split']} | {r.get('metric_name', r['metric'])} | {r['value']:.4f} |"
            for r in results]
    return "\n".join(["| Task | Dataset | Split | Metric | Value |", "|---|---|---|---|---|", *rows])


def _parity(conversion):
    if conversion is None:
        return ("Not applicable: this checkpoint was trained with medvlp-hf, not converted from an original "
                "checkpoint.")
    status = conversion["parity_status"]
    tolerance = conversion.get("tolerance")
    if isinstance(tolerance, dict):
        bound = f" (tolerance rtol {tolerance['rtol']:g}, atol {tolerance['atol']:g}; integer outputs identical)"
    else:
        bound = f" (tolerance {tolerance:g})" if tolerance is not None else ""
    summary = {
        "passed": f"**Passed**{bound}: on fixed inputs, the converted model reproduces the outputs of the original "
                  "implementation run on the original checkpoint (fp32).",
        "failed": f"**Failed**{bound}: the converted model does NOT reproduce the original implementation's outputs; "
                  "do not rely on it to reproduce the paper.",
        "not verified": "**Not verified**: the converted outputs have not been compared with the original "
                        "implementation.",
    }[status]
    if conversion.get("reference"):
        summary += f"\n\nReference: {conversion['reference']}."
    if not conversion["max_abs_diffs"]:
        return summary
    rows = [f"| {name} | {diff:.3g} |" for name, diff in conversion["max_abs_diffs"].items()]
    return "\n".join([summary, "", "| Output | Max abs difference |", "|---|---|", *rows])


def _link(url):
    return f"<{url}>" if url else "-"


def _as_list(value):
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _unique(items):
    return list(dict.fromkeys(items))
