"""Hub ids resolved through huggingface_hub, failing fast and clearly when the hub is out of reach."""
from __future__ import annotations

from pathlib import Path

from ..errors import HubUnavailableError

# Only what a merge needs: weights, configs and tokenizer files (never optimizer states or other formats).
ALLOW = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


def resolve_hub_id(repo_id: str) -> Path:
    """Local snapshot directory for a hub model id, from the cache or downloaded."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=ALLOW))
    except Exception as e:  # offline mode, DNS failure, gated repo, missing repo: all end the same way for us
        raise HubUnavailableError(
            f"model {repo_id!r} is not a local path and could not be fetched from the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Fix: download it where the hub "
            "is reachable (huggingface-cli download) and point the spec at the local directory."
        ) from e
