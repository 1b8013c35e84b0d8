"""Model registry: architectures are small factory functions, rebuilt from a name plus JSON arguments.

A checkpoint is ``arch_name`` + ``arch_args`` (JSON) + safetensors weights, never a pickled object:
``create_model(model.arch_name, **model.arch_args)`` rebuilds an identically shaped model, also under
``with torch.device("meta"):`` when only state-dict keys and shapes are needed.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from latentds.errors import ConfigError, UnknownModelError

__all__ = [
    "GeneratorContract",
    "accepts_argument",
    "check_choice",
    "check_int",
    "count_parameters",
    "create_model",
    "generator_contract",
    "input_args",
    "is_model",
    "list_models",
    "output_to_unit",
    "register_model",
    "seeded_model",
    "uint8_to_output",
    "unregister_model",
]

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class GeneratorContract:
    """What a generator consumes and produces; every registered generator carries one as ``model.contract``.

    ``model(z, y)`` maps ``z`` (B, latent_dim) and class indices ``y`` (B,) in [0, num_classes) to images
    (B, *image_shape) with values in ``output_range``. Everything downstream (training, inversion,
    condensation, the .lds image spec, decoding, export) reads the shape from here, never assumes one.
    """

    latent_dim: int
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    output_range: tuple[float, float] = (-1.0, 1.0)

    def mismatches(
        self,
        what: str,
        *,
        num_classes: int | None = None,
        latent_dim: int | None = None,
        image_shape: Any = None,
        output_range: Any = None,
    ) -> list[str]:
        """How this contract disagrees with ``what`` (e.g. "the file", "the data"); only the given fields count."""
        out = []
        if num_classes is not None and self.num_classes != num_classes:
            out.append(f"it is conditioned on {self.num_classes} classes, {what} has {num_classes}")
        if latent_dim is not None and self.latent_dim != latent_dim:
            out.append(f"it takes latents of size {self.latent_dim}, {what} has {latent_dim}")
        if image_shape is not None and tuple(self.image_shape) != tuple(image_shape):
            made, have = ("x".join(map(str, s)) for s in (self.image_shape, image_shape))
            out.append(f"it makes {made} images (C x H x W), {what} has {have}")
        if output_range is not None and [float(v) for v in self.output_range] != [float(v) for v in output_range]:
            out.append(f"its output range is {list(self.output_range)}, {what} says {list(output_range)}")
        return out

    def describe(self) -> str:
        c, h, w = self.image_shape
        lo, hi = self.output_range
        return f"z {self.latent_dim} + {self.num_classes} classes -> {c}x{h}x{w} in [{lo:g}, {hi:g}]"


def output_to_unit(x: Tensor, output_range: tuple[float, float]) -> Tensor:
    """Generator output in ``output_range`` (B, C, H, W) -> pixels in [0, 1]: ``x * scale + shift`` (for
    [-1, 1] exactly ``x * 0.5 + 0.5``)."""
    lo, hi = (float(v) for v in output_range)
    return x * (1.0 / (hi - lo)) + (-lo / (hi - lo))


def uint8_to_output(images: Tensor, output_range: tuple[float, float]) -> Tensor:
    """uint8 pixels (0..255) -> float32 in the generator's ``output_range`` (for [-1, 1] exactly ``x / 127.5 - 1``)."""
    lo, hi = (float(v) for v in output_range)
    return images.float() / (255.0 / (hi - lo)) + lo


def _short(value: object) -> str:
    """A value for an error message, cut short (a hostile integer may have thousands of digits)."""
    text = str(value) if not isinstance(value, int) or abs(value) < 10**12 else f"~10**{len(str(abs(value))) - 1}"
    return text[:40]


def generator_contract(model: nn.Module) -> GeneratorContract:
    """The contract of a generator built by :func:`create_model`; ConfigError if the model declares none."""
    contract = getattr(model, "contract", None)
    if not isinstance(contract, GeneratorContract):
        name = getattr(model, "arch_name", type(model).__name__)
        raise ConfigError(
            f"model {name!r} is not a generator: it declares no GeneratorContract (a generator sets "
            "self.contract = GeneratorContract(latent_dim, num_classes, (C, H, W)))"
        )
    return contract


def accepts_argument(name: str, arg: str) -> bool:
    """Whether the registered factory ``name`` takes the argument ``arg`` (e.g. ``image_size``, ``channels``)."""
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    params = inspect.signature(_REGISTRY[name]).parameters
    return arg in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


InputArgs = Callable[[tuple[int, int, int]], dict[str, Any]]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INPUT_ARGS: dict[str, InputArgs] = {}


def register_model(fn: F | None = None, *, inputs: InputArgs | None = None) -> Any:
    """Register a model factory under its function name (decorator, with or without arguments).

    ``inputs``: maps an image shape (C, H, W) to the factory arguments that fit it (e.g. ConvNet's depth by
    resolution); by default the ``channels`` and ``image_size`` arguments the factory takes.
    """

    def register(f: F) -> F:
        name = f.__name__
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = f
        if inputs is not None:
            _INPUT_ARGS[name] = inputs
        return f

    return register(fn) if fn is not None else register


def unregister_model(name: str) -> None:
    """Remove ``name`` from the registry (for plugins and tests that register temporary models)."""
    _REGISTRY.pop(name, None)
    _INPUT_ARGS.pop(name, None)


def input_args(name: str, image_shape: tuple[int, int, int]) -> dict[str, Any]:
    """The arguments of model ``name`` that make it consume (or, for a generator, produce) ``image_shape``."""
    c, h, w = (int(v) for v in image_shape)
    if name in _INPUT_ARGS:
        return dict(_INPUT_ARGS[name]((c, h, w)))
    args: dict[str, Any] = {}
    if accepts_argument(name, "channels"):
        args["channels"] = c
    if accepts_argument(name, "image_size"):
        args["image_size"] = h
    return args


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model."""
    return name in _REGISTRY


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with factory arguments ``kwargs`` (JSON-serializable values).

    The model gets ``arch_name`` and ``arch_args`` attributes from which it can be rebuilt.
    Raises UnknownModelError for an unregistered name and ConfigError for bad arguments.
    """
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        )
    fn = _REGISTRY[name]
    _check_arguments(name, fn, kwargs)
    # Store the resolved arguments (defaults included) so a file keeps its meaning if a default changes.
    resolved = _resolve_arguments(fn, kwargs)
    try:
        args_json = json.dumps(resolved, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"model {name!r}: arguments must be JSON-serializable so the model can be rebuilt ({e})"
        ) from e
    try:
        model = fn(**kwargs)
    except TypeError as e:  # a value of the wrong type that slipped past the factory's checks
        raise ConfigError(f"model {name!r}: invalid argument value in {args_json}: {e}") from e
    model.arch_name = name
    model.arch_args = json.loads(args_json)
    return model


def seeded_model(seed: int, name: str, **kwargs: Any) -> nn.Module:
    """:func:`create_model` with its initialization drawn from ``seed``; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once); works on the meta device."""
    return sum(p.numel() for p in model.parameters())


# --- argument checks shared by the factories -----------------------------------------------------------
def _check_arguments(name: str, fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> None:
    sig = inspect.signature(fn)
    params = sig.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ConfigError(
                f"model {name!r} has no argument {', '.join(map(repr, unknown))}; "
                f"valid arguments: {_describe_signature(sig)}"
            )
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"model {name!r}: {e}; valid arguments: {_describe_signature(sig)}") from e


def _resolve_arguments(fn: Callable[..., nn.Module], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = inspect.signature(fn).bind(**kwargs)
    bound.apply_defaults()
    resolved: dict[str, Any] = {}
    for key, value in bound.arguments.items():
        if inspect.signature(fn).parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
            resolved.update(value)
        else:
            resolved[key] = value
    return resolved


def _describe_signature(sig: inspect.Signature) -> str:
    return ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in sig.parameters.values()
    )


MAX_INT_ARG = 1 << 16  # widths, depths, class counts, latent sizes: a file asking for more is hostile or broken


def check_int(model: str, arg: str, value: Any, minimum: int = 1, maximum: int = MAX_INT_ARG) -> int:
    """Return ``value`` if it is an int in [minimum, maximum] (bools rejected), else raise ConfigError.

    The upper bound keeps a hostile file from making even a meta-device build slow or huge (a ConvNet of
    depth 14,000, a width of 1e9)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"model {model!r}: {arg} must be an integer, got {value!r:.40}")
    if value < minimum:
        raise ConfigError(f"model {model!r}: {arg} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(f"model {model!r}: {arg} must be <= {maximum}, got {_short(value)}")
    return value


def check_choice(model: str, arg: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError listing them."""
    if not any(type(value) is type(c) and value == c for c in choices):  # no 1 == True
        raise ConfigError(f"model {model!r}: {arg} must be one of {choices!r}, got {value!r}")
    return value
