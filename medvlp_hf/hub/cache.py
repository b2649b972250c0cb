"""Copy a saved model folder into the Hugging Face cache so `from_pretrained(repo_id)` works offline.

Air-gapped sites (hospitals) bring models in on a disk, not through the Hub. `seed_hub_cache` writes
what `hf_hub_download` would have left behind - `blobs/<sha256>`, `snapshots/<commit>/<file>` as
relative symlinks to the blobs, `refs/<revision>` holding the commit - so the unchanged loading code
(`AutoModel.from_pretrained("org/name")` under `HF_HUB_OFFLINE=1`) finds the files. No network.
"""
import hashlib
import os
import re
import shutil
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id

_SKIPPED_DIRS = {".git", ".cache"}
_REPO_TYPES = ("model", "dataset", "space")
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
_CHUNK = 1 << 20


def seed_hub_cache(local_folder, repo_id, cache_dir=None, revision="main", repo_type="model"):
    """Lay `local_folder` out in the HF cache as `repo_id` at `revision`; return the snapshot folder.

    The commit hash is derived from the files' contents, so seeding the same folder twice gives the
    same snapshot and a changed folder gives a new one that `revision` then points to. A 40-hex
    `revision` is used as the commit itself (no ref is written), like a download pinned to a commit.
    """
    folder = Path(local_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"seed_hub_cache: {folder} is not a folder; pass the folder save_pretrained wrote.")
    validate_repo_id(repo_id)
    if repo_type not in _REPO_TYPES:
        raise ValueError(f"seed_hub_cache: repo_type must be one of {_REPO_TYPES}, got {repo_type!r}.")
    if not revision or ".." in revision.split("/"):
        raise ValueError(f"seed_hub_cache: invalid revision {revision!r}; use a branch/tag name or a commit hash.")
    files = _files_to_seed(folder)
    if not files:
        raise ValueError(f"seed_hub_cache: {folder} holds no files to seed.")

    digests = {rel: _sha256(folder / rel) for rel in files}
    commit = revision if _COMMIT_HASH.match(revision) else _content_commit(digests)
    repo_dir = Path(cache_dir or constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    snapshot = repo_dir / "snapshots" / commit
    for rel, digest in digests.items():
        blob = repo_dir / "blobs" / digest
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / rel, blob)
        _link(blob, snapshot / rel)
    if commit != revision:
        ref = repo_dir / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)
    return snapshot


def _files_to_seed(folder):
    """Relative POSIX paths of every file under `folder`, without VCS or local-cache folders."""
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and not _SKIPPED_DIRS.intersection(path.relative_to(folder).parts)
    )


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _content_commit(digests):
    """A deterministic 40-hex id of the file tree (paths and contents)."""
    tree = "".join(f"{rel}\0{digest}\n" for rel, digest in sorted(digests.items()))
    return hashlib.sha1(tree.encode()).hexdigest()


def _link(blob, pointer):
    """Relative symlink as the Hub cache uses; a plain copy where the OS refuses symlinks."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:
        shutil.copyfile(blob, pointer)
