"""Codec settings as config values: which codec and options a config names, and how a point is named."""

from __future__ import annotations

import inspect

from pydantic import BaseModel, ConfigDict, Field, model_validator

from splitbench.codecs.base import CODECS

CodecOption = str | int | float | bool


def check_codec(name: str, options: dict[str, CodecOption]) -> None:
    """Fail at config load, not mid-sweep: the codec name and its option names must exist."""
    try:
        factory = CODECS.get(name)
    except KeyError as error:  # as ValueError, so the config error names method_args
        raise ValueError(str(error.args[0])) from None
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = sorted(set(params) - {"self", "quality"})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"codec {name!r} has no option {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}")


def codec_variant(codec: str, options: dict[str, CodecOption], *more: str) -> str:
    """Run/series name: the codec, its non-default options, and e.g. the split point."""
    return "-".join([codec, *(f"{k}{v}" for k, v in sorted(options.items())), *more])


def quality_param(quality: float) -> dict:
    """The rate parameter of a codec point: its quality, as an int where it is one."""
    return {"quality": int(quality) if float(quality).is_integer() else quality}


class CodecArgs(BaseModel):
    """A codec and its settings as ``method_args`` (input and feature compression): checked at config load."""

    model_config = ConfigDict(extra="forbid")

    codec: str = "jpeg"
    quality: float = Field(75, ge=0)
    options: dict[str, CodecOption] = Field({}, description="codec-specific settings, e.g. {preset: medium} for vvc")

    @model_validator(mode="after")
    def _known_codec(self) -> CodecArgs:
        check_codec(self.codec, self.options)
        return self
