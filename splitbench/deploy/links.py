"""Links to deploy over: a radio power model plus the rates, RTT and loss (or a Mahimahi trace) of the runtime's
link model (:mod:`splitbench.runtime.link`), which predicts transfer times here exactly as it delays them when
the device client emulates a link.

Named on the command line as ``RADIO:UP_MBPS[,down=MBPS][,rtt=MS][,loss=P]`` (``lte:5``, ``wifi:20,rtt=5``; the
radio file's ``link:`` section gives the defaults and their source), or as a YAML file of :class:`LinkSpec`
fields (``radio`` may be omitted: no radio energy, e.g. for loopback checks; ``trace`` replaces the rates).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from splitbench.deploy.radio import Radio, Strict, load_radio, read_yaml, validated
from splitbench.errors import ConfigError
from splitbench.runtime.link import Link

OPTIONS = {"down": "downlink_mbps", "rtt": "rtt_ms", "loss": "loss"}


class LinkSpec(Strict):
    name: str | None = None
    radio: str | None = None  # a shipped radio's name or a radio file (relative to the link file)
    uplink_mbps: float | None = Field(None, gt=0)
    downlink_mbps: float | None = Field(None, gt=0)
    rtt_ms: float = Field(0.0, ge=0)
    loss: float = Field(0.0, ge=0, lt=1)
    trace: Path | None = None  # Mahimahi trace, both directions (relative to the link file)


@dataclass(frozen=True)
class DeployLink:
    """A link as the deployment model uses it: its spec, its radio (None: no radio energy), its label."""

    spec: LinkSpec
    radio: Radio | None
    label: str

    def build(self, seed: int = 0) -> Link:
        """A fresh runtime link (its own clock and loss RNG)."""
        s = self.spec
        return Link.build(s.uplink_mbps, s.downlink_mbps, s.rtt_ms, s.loss, s.trace, seed)

    def with_uplink(self, mbps: float) -> DeployLink:
        """The same link at another uplink rate (the bandwidth sweeps)."""
        spec = self.spec.model_copy(update={"uplink_mbps": mbps, "trace": None})
        return DeployLink(spec, self.radio, f"{self.label} @ {mbps:g} Mbit/s up")

    @property
    def stem(self) -> str:
        """A file-name-safe name."""
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in self.label)


def _number(text: str, what: str, link: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"link {link!r}: {what} must be a number, got {text!r}") from None


def parse_link(text: str) -> DeployLink:
    """``lte:5``, ``wifi:20,down=50,rtt=5``, or a link YAML file."""
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"link file {path} does not exist")
        spec = validated(LinkSpec, read_yaml(path, "link file"), path)
        radio = None
        if spec.radio is not None:
            beside = path.parent / spec.radio
            radio = load_radio(beside if beside.is_file() else spec.radio)
        if spec.trace is not None:  # relative to the link file
            spec = spec.model_copy(update={"trace": path.parent / spec.trace})
        return DeployLink(spec, radio, spec.name or path.stem)
    name, _, rest = text.partition(":")
    if not rest:
        raise ConfigError(f"link {text!r}: name it RADIO:UPLINK_MBPS[,down=MBPS][,rtt=MS][,loss=P] (e.g. lte:5, "
                          f"wifi:20) or pass a link YAML file")
    radio = load_radio(name)
    up, *options = rest.split(",")
    values = {"uplink_mbps": _number(up, "the uplink Mbit/s", text)}
    if radio.link is not None:
        values.update(downlink_mbps=radio.link.downlink_mbps, rtt_ms=radio.link.rtt_ms, loss=radio.link.loss)
    for option in options:
        key, _, value = option.partition("=")
        if key not in OPTIONS:
            raise ConfigError(f"link {text!r}: unknown option {key!r}; known: {', '.join(OPTIONS)}")
        values[OPTIONS[key]] = _number(value, key, text)
    spec = validated(LinkSpec, {"name": text, "radio": radio.name, **values}, f"link {text!r}")
    return DeployLink(spec, radio, text)
