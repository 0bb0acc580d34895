"""Hub ids resolved through huggingface_hub, failing fast and clearly when the hub is out of reach."""
from __future__ import annotations

from pathlib import Path

from ..errors import HubUnavailableError

# Only what a merge needs: configs and tokenizer files, and one weight format (never optimizer or trainer states).
SIDE_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
SAFETENSORS = ["*.safetensors"]
# Named, not "*.bin": repositories also hold training_args.bin, optimizer.bin, rng states.
PICKLED_WEIGHTS = ["pytorch_model*.bin", "adapter_model.bin"]


def resolve_hub_id(repo_id: str) -> Path:
    """Local snapshot directory for a hub model id, from the cache or downloaded: safetensors weights where the
    repository has them, its pytorch_model*.bin files only where it does not."""
    path = _snapshot(repo_id, SIDE_FILES + SAFETENSORS)
    if not any(path.glob("*.safetensors")):
        path = _snapshot(repo_id, SIDE_FILES + PICKLED_WEIGHTS)
    return path


def _snapshot(repo_id: str, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # offline mode, DNS failure, gated repo, missing repo: all end the same way for us
        raise HubUnavailableError(
            f"model {repo_id!r} is not a local path and could not be fetched from the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Fix: download it where the hub "
            "is reachable (huggingface-cli download) and point the spec at the local directory."
        ) from e
