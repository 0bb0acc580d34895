"""One directory format for every routed model: manifest.json (format version, router kind and parameters, base,
experts, modules), experts.safetensors (each module's factors per expert) and router.safetensors (the router's
tensors, e.g. Arrow's prototypes; for MHR each module's routing logits and skills, which few-shot adaptation may
have changed; for Twin-Merging the input router's MLP, tempered for the calibrated one). `load_routed(dir)` rebuilds
the torch module on the base. Twin-Merging's base is its shared merge, which exists nowhere else: it is stored inside
the folder (`shared/`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError, UsageError
from ..io.output import staged_output
from .arrow import ArrowRouter
from .calibrated_twin import ScaledTwin, tempered
from .library import ExpertUpdate, LoraLibrary
from .mhr import MultiHeadRouted, route_mhr
from .phatgoose import PhatgooseRouter
from .modules import RoutedUpdate, route
from .twin import TwinMerged, router_mlp

FORMAT, VERSION = "taskfuse-routed", 1
SHARED = "shared"  # Twin-Merging's shared model, inside the routed folder
SHARED_BASE = ("twin", "twin_calibrated")  # the router kinds whose base is that shared model


def _per_module(router_cls):
    """A build hook for a router that sits on each adapted module (RoutedUpdate), made from the module's updates."""
    def build(model: nn.Module, library: LoraLibrary, params: dict) -> nn.Module:
        return route(model, library, lambda name, updates, module: router_cls.for_updates(
            updates, module.in_features, **params))
    return build


# router kind -> how to rebuild it on a base model from the library and the manifest's router parameters, returning
# the routed model (the router's learnt state is restored afterwards from router.safetensors)
ROUTERS = {"arrow": _per_module(ArrowRouter), "phatgoose": _per_module(PhatgooseRouter),
           "mhr": lambda model, library, params: route_mhr(model, library, **params),
           "twin": lambda model, library, params: TwinMerged(model, library, router_mlp(**params)),
           # the temperature is the tempered router's last layer: 1 here, its stored weights restore the real one
           "twin_calibrated": lambda model, library, params: ScaledTwin(
               model, library, tempered(router_mlp(params["features"], params["experts"], params["hidden"]), 1.0),
               params["scale"], params["parts"])}


def _routing_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a routed module holds beyond its base layer: a RoutedUpdate's router, an MHR module's logits and skills."""
    if isinstance(module, RoutedUpdate):
        return module.router.state_dict()
    return {k: v for k, v in module.state_dict().items() if not k.startswith("base.")}


def _routed_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module whose state the folder keeps: the routed layers, and Twin-Merging's input router."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, (RoutedUpdate, MultiHeadRouted))}
    if isinstance(model, TwinMerged):
        found["router"] = model.router
    return found


def save_routed(model: nn.Module, library: LoraLibrary, router: str, router_params: dict, out: Path,
                extra: dict | None = None, shared: Path | None = None) -> None:
    """Write `model` (routed by `route`) as a routed directory; `extra` (e.g. data seen) goes into the manifest.
    For Twin-Merging, `shared` is the shared merge's model folder, copied in as the base; calibrated Twin-Merging
    (router "twin_calibrated", `model.stored_params()`) is saved with the library of the parts it holds."""
    if (router in SHARED_BASE) != (shared is not None):
        raise UsageError(f"save_routed({router!r}): a shared model folder is given for Twin-Merging, and only for "
                         f"it. Fix: pass shared=<the shared merge's folder> with router {' or '.join(SHARED_BASE)}, "
                         "else leave it out.")
    factors, router_tensors = {}, {}
    for module, per in library.modules.items():
        for expert, update in per.items():
            factors[f"{module}::{expert}::A"] = update.a.contiguous()
            factors[f"{module}::{expert}::B"] = update.b.contiguous()
    routed = _routed_modules(model)
    for name, m in routed.items():
        for key, tensor in _routing_state(m).items():
            router_tensors[f"{name}::{key}"] = tensor.contiguous()
    manifest = {"format": FORMAT, "version": VERSION, "router": router, "router_params": router_params,
                "base": SHARED if shared else library.base, "base_in_folder": bool(shared),
                "experts": library.experts, "modules": sorted(library.modules),
                "routed_modules": sorted(routed), **(extra or {})}
    with staged_output(Path(out), "routed") as stage:
        if shared:
            shutil.copytree(shared, stage / SHARED)
        save_file(factors, stage / "experts.safetensors")
        save_file(router_tensors, stage / "router.safetensors")
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder} is not a taskfuse routed model (manifest.json unreadable: {e}). Fix: "
                              "point at a folder written by taskfuse route or the benchmark.") from e
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(f"{folder}: manifest format {manifest.get('format')!r} version "
                              f"{manifest.get('version')!r}; this taskfuse reads {FORMAT!r} version {VERSION}.")
    if manifest.get("router") not in ROUTERS:
        raise CheckpointError(f"{folder}: unknown router {manifest.get('router')!r} (known: {sorted(ROUTERS)}).")
    return manifest


def load_routed(folder: str | Path, base_model: nn.Module | None = None) -> nn.Module:
    """The routed torch module: `base_model` (or the manifest's base, loaded with transformers) with each adapted
    module replaced, its factors and router state restored exactly."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    factors, router_state = load_file(folder / "experts.safetensors"), load_file(folder / "router.safetensors")
    modules: dict[str, dict[str, ExpertUpdate]] = {}
    for key in factors:
        module, expert, part = key.split("::")
        if part == "A":
            modules.setdefault(module, {})[expert] = ExpertUpdate(factors[key], factors[f"{module}::{expert}::B"])
    library = LoraLibrary(manifest["base"], manifest["experts"], modules)
    if base_model is None:
        base_model = _load_base(str(folder / SHARED) if manifest.get("base_in_folder") else manifest["base"])
    model = ROUTERS[manifest["router"]](base_model, library, manifest["router_params"])
    for name, m in _routed_modules(model).items():
        state = {k.split("::", 1)[1]: v for k, v in router_state.items() if k.split("::", 1)[0] == name}
        if isinstance(m, RoutedUpdate):
            m.router.load_state_dict(state)
        elif isinstance(m, MultiHeadRouted):
            m.load_state_dict({**{f"base.{k}": v for k, v in m.base.state_dict().items()}, **state})
        else:
            m.load_state_dict(state)
    return model.eval()


def _load_base(base: str) -> nn.Module:
    import transformers
    config = transformers.AutoConfig.from_pretrained(base)
    classes = [getattr(transformers, a, None) for a in (config.architectures or [])]
    cls = next((c for c in classes if c is not None), transformers.AutoModel)
    return cls.from_pretrained(base)
