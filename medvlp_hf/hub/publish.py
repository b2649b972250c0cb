"""Publish a checkpoint to the Hub: weights, config, processor and model card in one commit.

This is the only code in medvlp-hf that uses the network, and only when called. It refuses to run
in offline mode and refuses folders that would give an unusable or undocumented repository (no
config, no safetensors weights, no processor, no card).
"""
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import validate_repo_id
from transformers.utils import CONFIG_NAME, IMAGE_PROCESSOR_NAME, PROCESSOR_NAME

from .model_card import README_NAME, save_model_card

MODEL_CONFIG_FILES = (CONFIG_NAME, "adapter_config.json")
PROCESSOR_FILES = (PROCESSOR_NAME, IMAGE_PROCESSOR_NAME)
DEFAULT_COMMIT_MESSAGE = "Upload model, processor and model card with medvlp-hf"


class HubConnectionError(ConnectionError):
    """The Hub endpoint could not be reached (no network, wrong HF_ENDPOINT, server down)."""


def push_to_hub(folder_or_model, repo_id, *, card=None, processor=None, token=None, private=None,
                commit_message=DEFAULT_COMMIT_MESSAGE, endpoint=None):
    """Create `repo_id` if needed and upload a checkpoint with its card; return the `CommitInfo`.

    folder_or_model: a folder written by `save_pretrained` (model and processor), or a model object,
    which then needs `processor=`. card: the card text (`render_model_card(...)`); it is written to the
    folder's README.md before upload (a model object is saved to a temporary folder). Without `card`,
    the folder's existing README.md is used. endpoint: a Hub other than HF_ENDPOINT (e.g. a private
    mirror); token: as in huggingface_hub (default: the stored login or HF_TOKEN).
    """
    if constants.is_offline_mode():
        raise RuntimeError("push_to_hub needs the network, but offline mode is on (HF_HUB_OFFLINE=1): "
                           "unset HF_HUB_OFFLINE to publish, or copy the folder and use seed_hub_cache on the target.")
    validate_repo_id(repo_id)
    upload = dict(repo_id=repo_id, card=card, token=token, private=private, commit_message=commit_message,
                  endpoint=endpoint)
    if hasattr(folder_or_model, "save_pretrained"):
        if processor is None:
            raise ValueError("push_to_hub(model, ...) needs processor=: the repository must carry the processor "
                             "that prepares the model's inputs.")
        with tempfile.TemporaryDirectory(prefix="medvlp-push-") as folder:
            folder_or_model.save_pretrained(folder)
            processor.save_pretrained(folder)
            return _upload_folder(Path(folder), **upload)
    if processor is not None:
        raise ValueError("processor= is only for a model object; for a folder, save the processor into it.")
    folder = Path(folder_or_model)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_to_hub: {folder} is not a folder; pass a save_pretrained folder or a model.")
    return _upload_folder(folder, **upload)


def _upload_folder(folder, *, repo_id, card, token, private, commit_message, endpoint):
    _check_checkpoint_folder(folder)
    if card is not None:
        save_model_card(card, folder)
    elif not (folder / README_NAME).is_file():
        raise ValueError(f"{folder} has no {README_NAME}: pass card=render_model_card(...) so the repository "
                         "says what the model is, its data and that it is not for clinical use.")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message)
    except Exception as err:
        if _is_connection_failure(err):
            raise HubConnectionError(f"could not reach the Hub at {api.endpoint} to push {repo_id}: {err}. "
                                     "Check the network and HF_ENDPOINT/endpoint=.") from err
        raise


def _check_checkpoint_folder(folder):
    names = {path.name for path in folder.iterdir() if path.is_file()}
    problems = []
    if not names.intersection(MODEL_CONFIG_FILES):
        problems.append(f"no model config ({' or '.join(MODEL_CONFIG_FILES)})")
    if not any(name.endswith(".safetensors") for name in names):
        problems.append("no *.safetensors weights")
    if not names.intersection(PROCESSOR_FILES):
        problems.append(f"no processor ({' or '.join(PROCESSOR_FILES)})")
    if problems:
        raise ValueError(f"{folder} is not a complete checkpoint: {'; '.join(problems)}. Save it with "
                         "model.save_pretrained(folder) and processor.save_pretrained(folder).")


def _is_connection_failure(err):
    """True for transport-level failures (refused, DNS, timeout) anywhere in the exception chain.

    huggingface_hub's HTTP client is httpx (hub 1.x) or httpx2 (hub 2.x); both raise `TransportError`s.
    """
    while err is not None:
        if isinstance(err, (ConnectionError, TimeoutError)) or any(
            cls.__name__ == "TransportError" and cls.__module__.startswith("httpx") for cls in type(err).__mro__
        ):
            return True
        err = err.__cause__ or err.__context__
    return False
