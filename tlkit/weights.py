"""Reading state dicts safely and loading pretrained weights without silent fallbacks.

Nothing here unpickles arbitrary objects: ``.safetensors`` files are read with safetensors and
``.pth``/``.bin`` files with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tlkit.errors import TlkitError, WeightsUnavailableError

HUB_HOST = "huggingface.co"
HUB_TIMEOUT_S = 3.0


def read_state_dict(path) -> dict:
    """Read a state dict from ``.safetensors``, ``.pth``, ``.pt`` or ``.bin`` without unpickling code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TlkitError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader error is bad input
        raise TlkitError(f"cannot read weights file {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    # Training checkpoints often nest the weights one level down.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise TlkitError(f"{str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    return state


def load_matching(module, state: dict, *, what: str, source: str, ignore_prefixes=()) -> None:
    """Load ``state`` into ``module``: every key of the module must be present with its shape.

    Keys in ``state`` that start with one of ``ignore_prefixes`` (a classifier, a pre-logits block)
    are ignored, since a backbone has no classifier; any other key the module lacks means the file
    is for another architecture. Raises TlkitError naming the first offending keys.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own and not k.startswith(tuple(ignore_prefixes))]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
    if extra:
        problems.append(f"{len(extra)} unexpected keys (first: {', '.join(extra[:3])})")
    if wrong:
        problems.append(f"shape mismatch: {'; '.join(wrong[:3])}")
    if problems:
        raise TlkitError(f"{source} does not fit {what}: {'; '.join(problems)}. Is it a state dict in "
                         f"timm's layout for this backbone?")
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def hub_reachable(host: str = HUB_HOST, timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the weights hub answers within ``timeout`` seconds (so offline use fails fast)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def timm_weights_cached(model_name: str) -> bool:
    """Whether timm's default pretrained weights for ``model_name`` are in the Hugging Face cache."""
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    cfg = timm.models.get_pretrained_cfg(model_name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return False
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return True
    return False


def require_timm_weights(model_name: str, backbone: str) -> None:
    """Raise WeightsUnavailableError at once unless timm can get pretrained weights for the model."""
    if timm_weights_cached(model_name):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # cached: never wait on the network
        return
    if not hub_reachable():
        raise WeightsUnavailableError(
            f"pretrained weights for backbone {backbone!r} are not in the Hugging Face cache and "
            f"{HUB_HOST} cannot be reached; connect once to download them, pass --weights FILE "
            f"(a state dict in timm's layout), or use --no-pretrained"
        )
