"""Shared parts of the image-classification spaces: ``name=value`` strings, input checks.

Architecture strings list every variable as ``name=value`` separated by spaces, e.g.
``conv_1=mo attention_1=none ...``; values are written as the space's choices are
(``0.75``, ``4``, ``mo-se``). Parsing accepts the variables in any order and names the
offending variable and the valid values when a string is malformed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from models.backbone import STEM_STRIDES, resolved_stem_stride
from nas.errors import NASError
from nas.space import Encoding, SearchSpace


def choice_text(value: object) -> str:
    """How a choice is written in architecture strings (``1.0`` is written ``1``)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def check_resolution(space: str, resolution: object) -> int:
    """``resolution`` as a positive int, or a :class:`NASError` naming ``space``."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise NASError(f"Search space {space!r} needs a positive integer input resolution, got {resolution!r}.")
    return resolution


def check_stem_stride(space: str, stem: str, stride: object) -> int | None:
    """``stride`` (``None``: the stem's published one) if the space's ``stem`` takes it, or a
    :class:`NASError` naming the space and the strides that are valid."""
    valid = STEM_STRIDES[stem][1]
    if stride is None:
        return None
    if isinstance(stride, bool) or stride not in valid:
        raise NASError(f"Search space {space!r} takes a stem_stride of {', '.join(map(str, valid))} (or null for {STEM_STRIDES[stem][0]}), got {stride!r}.")
    return int(stride)  # type: ignore[arg-type]


def check_widths(space: str, widths: object, stages: int = 4) -> tuple[int, ...]:
    """``widths`` as a tuple of ``stages`` positive ints, or a :class:`NASError` naming ``space``."""
    values = tuple(widths) if isinstance(widths, Sequence) and not isinstance(widths, str) else ()
    if len(values) != stages or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in values):
        raise NASError(f"Search space {space!r} needs {stages} positive integer stage widths, got {widths!r}.")
    return values


def check_option(space: str, what: str, value: object, valid: Sequence[object]) -> None:
    """Raise a :class:`NASError` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise NASError(
            f"Search space {space!r} has no {what} {value!r}; valid values are {', '.join(map(repr, valid))}."
        )


def default_cache_dir() -> Path:
    """``$NAS_CACHE_DIR``, or ``~/.cache/nas`` when it is not set."""
    return Path(os.environ.get("NAS_CACHE_DIR") or Path.home() / ".cache" / "nas").expanduser()


class KeyValueSpace(SearchSpace):
    """A :class:`SearchSpace` whose architectures read ``name=value name=value ...``.

    Subclasses set :attr:`resolution` (square inputs) and may override
    :meth:`violation` to explain, in words, why an in-range encoding breaks a constraint.
    """

    resolution: int = 224
    #: The networks' stem (a name of ``models.backbone.STEMS``) and the stride of their stages
    #: after it (``None``: not a stage network): together the input size the last stage divides.
    stem: str = "conv"
    stage_stride: int | None = None
    stem_stride: int | None = None

    @property
    def total_stride(self) -> int | None:
        """How many input pixels one pixel of the last stage spans (``None``: unknown)."""
        if self.stage_stride is None:
            return None
        return resolved_stem_stride(self.stem, self.stem_stride) * self.stage_stride

    def stem_signature(self) -> dict[str, object]:
        """The stem stride's part of :meth:`signature`: empty for the published stride, so
        that artifacts cached before the option existed keep their keys."""
        return {"stem_stride": self.stem_stride} if self.stem_stride is not None else {}

    def check_image_size(self, size: int) -> None:
        stride = self.total_stride
        if stride is not None and size < stride:
            current = resolved_stem_stride(self.stem, self.stem_stride)
            smaller = [s for s in STEM_STRIDES[self.stem][1] if s < current]
            raise NASError(
                f"Search space {self.name!r} downsamples its input {stride}-fold (stem_stride {current}), "
                f"so {size}-px images would reach its last stage below one pixel; use images of at least {stride} px"
                + (f" or a smaller searchspace.stem_stride ({', '.join(map(str, smaller))})." if smaller else ".")
            )

    def to_string(self, encoding: Encoding) -> str:
        parts = []
        for name, options, code in zip(self.variable_names, self.choices, encoding):
            if not 0 <= int(code) < len(options):
                raise NASError(
                    f"Variable {name!r} of search space {self.name!r} takes codes 0..{len(options) - 1}, got {code}."
                )
            parts.append(f"{name}={choice_text(options[int(code)])}")
        return " ".join(parts)

    def parse(self, text: str) -> Encoding:
        names = self.variable_names
        values: dict[str, int] = {}
        for token in str(text).split():
            name, sep, value = token.partition("=")
            if not sep or name not in names:
                raise NASError(
                    f"Malformed {self.name} architecture string {text!r}: {token!r} is not 'variable=value' with a "
                    f"variable among {', '.join(names)}."
                )
            if name in values:
                raise NASError(f"Malformed {self.name} architecture string {text!r}: variable {name!r} is given twice.")
            options = [choice_text(v) for v in self.choices[names.index(name)]]
            if value not in options:
                raise NASError(
                    f"Variable {name!r} of search space {self.name!r} takes the values {', '.join(options)}, got {value!r}."
                )
            values[name] = options.index(value)
        missing = [n for n in names if n not in values]
        if missing:
            raise NASError(f"Malformed {self.name} architecture string {text!r}: missing {', '.join(missing)}.")
        return self.validate([values[n] for n in names])

    def violation(self, encoding: Encoding) -> str | None:
        """Why an in-range ``encoding`` violates the constraints, or ``None`` if it does not."""
        return None

    def validate(self, encoding: Sequence[int]) -> Encoding:
        try:
            return super().validate(encoding)
        except NASError:
            enc = tuple(int(v) for v in encoding)
            in_range = len(enc) == self.num_variables and all(
                0 <= v < len(c) for v, c in zip(enc, self.choices)
            )
            reason = self.violation(enc) if in_range else None
            if reason is None:
                raise
            raise NASError(f"Architecture {self.to_string(enc)} is outside search space {self.name!r}: {reason}.") from None

    def sample_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, 3, self.resolution, self.resolution)
