"""--push_to_hub for the example scripts: Trainer never goes online; at the end of a run the model, its processor and
a model card with the run's evaluation results are uploaded in one commit through medvlp_hf.hub."""

import logging
import os
from pathlib import Path

from ..hub import push_to_hub, render_model_card

logger = logging.getLogger("medvlp_hf.training")


def take_push_to_hub(training_args) -> bool:
    """Whether --push_to_hub was asked; switched off in `training_args` so that Trainer never goes online:
    the scripts publish once at the end through `publish` (model, processor and model card)."""
    wanted = bool(training_args.push_to_hub)
    training_args.push_to_hub = False
    return wanted


def card_results(metrics, prefix, split, dataset, names):
    """Model-card evaluation entries for the metrics `names` (without prefix) present in `metrics`."""
    return [
        {"dataset": dataset, "split": split, "metric": name, "value": metrics[f"{prefix}_{name}"]}
        for name in names
        if metrics.get(f"{prefix}_{name}") is not None
    ]


def publish(trainer, processor, model_args, data_args, eval_results, command):
    """Upload the trained model, its processor and a rendered model card (main process only). The repository is
    --hub_model_id (default: the output folder's name); the endpoint is HF_ENDPOINT as for huggingface_hub."""
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    head = model.get_base_model() if hasattr(model, "get_base_model") else model
    repo_id = args.hub_model_id or Path(args.output_dir).resolve().name
    source = model_args.model_name_or_path
    card = render_model_card(
        head.config.model_type,
        architecture=type(head).__name__,
        repo_id=repo_id,
        base_model=source if source and not os.path.isdir(source) else None,
        datasets=[data_args.dataset],
        dataset_licenses={data_args.dataset: data_args.dataset_license} if data_args.dataset_license else None,
        eval_results=eval_results,
        training_command=command,
    )
    info = push_to_hub(model, repo_id, card=card, processor=processor, token=args.hub_token,
                       private=args.hub_private_repo)
    logger.info(f"Pushed {repo_id} to the Hub: {info.commit_url}")
    return info
