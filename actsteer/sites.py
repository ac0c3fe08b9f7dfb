"""Hook sites: the one place where hook names are built and checked against a model."""

from __future__ import annotations

from typing import Any, Literal, get_args

from actsteer.errors import ActsteerError

Site = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
"""Where a vector is read or added. ``resid_post`` is the decoder block's output (the
paper's choice); ``attn_out``/``mlp_out`` are the sublayer outputs before they join the
residual stream."""

SITES: tuple[str, ...] = get_args(Site)


class HookSiteError(ActsteerError, ValueError):
    """A layer or site the model does not have."""


def hook_name(layer: int, site: str = "resid_post") -> str:
    """``blocks.{layer}.hook_{site}``."""
    if site not in SITES:
        raise HookSiteError(f"unknown site {site!r}; valid sites: {', '.join(SITES)}")
    return f"blocks.{layer}.hook_{site}"


def check_layers(model: Any, layers: list[int] | tuple[int, ...], site: str) -> list[str]:
    """Hook names for ``layers`` at ``site``, after checking that ``model`` has each one.

    TransformerBridge silently skips hooks on names it does not know, so every hook this
    package adds goes through here first.
    """
    n_layers = int(model.cfg.n_layers)
    names = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise HookSiteError(f"layer must be an int, got {layer!r}")
        if not 0 <= layer < n_layers:
            raise HookSiteError(
                f"layer {layer} is out of range: this model has layers 0..{n_layers - 1}"
            )
        name = hook_name(layer, site)
        if name not in model.hook_dict:
            valid = [s for s in SITES if hook_name(layer, s) in model.hook_dict]
            raise HookSiteError(
                f"{name} is not a hook of this model; sites it has at layer {layer}: "
                f"{', '.join(valid) or 'none'}"
            )
        names.append(name)
    return names
