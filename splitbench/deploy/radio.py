"""Radio power models as data: an RRC-style state machine (promotion, active transfer, a tail of timed phases)
that gives the energy of one transfer and of the idle gaps between transfers.

One engine serves every radio: LTE (Huang et al. 2012: active power α_u·up + α_d·down + β, promotion, inactivity
timer, short and long DRX), Wi-Fi (a constant active power and a short tail) and 3G (DCH and FACH tails, two
promotions) differ only in their data files (``splitbench/deploy/radios/*.yaml``, each naming its source). A user
file in the same format is accepted wherever a shipped name is.

Why a gap model: the tail after a transfer costs far more than the transfer itself (one isolated 5 kB LTE upload:
≈0.03 J to send, ≈11 J of promotion and tail), so energy per image depends on how soon the next image comes. The
energy of a gap of ``x`` seconds is the tail's phases cut at ``x``, plus the promotion the next transfer pays in
the state the radio reached (none inside a DRX phase, the FACH→DCH one inside FACH, the full one once idle).
Idle paging and Wi-Fi standby are background the device pays anyway, so they are not attributed to images.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from splitbench.config import format_errors
from splitbench.errors import ConfigError

RADIOS = Path(__file__).parent / "radios"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Promotion(Strict):
    duration_s: float = Field(ge=0)
    power_w: float = Field(ge=0)

    @property
    def energy_j(self) -> float:
        return self.duration_s * self.power_w


class Ping(Strict):
    """DRX: the receiver wakes for ``duration_s`` at ``power_w`` once every ``period_s``."""

    period_s: float = Field(gt=0)
    duration_s: float = Field(ge=0)
    power_w: float = Field(ge=0)


class Phase(Strict):
    """One timed state of the tail, at a mean power; ``promotion``: what data arriving in it pays (default none)."""

    name: str
    duration_s: float = Field(ge=0)
    power_w: float = Field(ge=0)
    ping: Ping | None = None
    promotion: Promotion | None = None

    @property
    def mean_power_w(self) -> float:
        if self.ping is None:
            return self.power_w
        awake = min(1.0, self.ping.duration_s / self.ping.period_s)
        return self.power_w + awake * (self.ping.power_w - self.power_w)


class Active(Strict):
    """Power while transferring: ``base_w + up_w_per_mbps·up + down_w_per_mbps·down`` (Huang et al.'s form)."""

    base_w: float = Field(ge=0)
    up_w_per_mbps: float = Field(0.0, ge=0)
    down_w_per_mbps: float = Field(0.0, ge=0)

    def power_w(self, up_mbps: float = 0.0, down_mbps: float = 0.0) -> float:
        return self.base_w + self.up_w_per_mbps * up_mbps + self.down_w_per_mbps * down_mbps


class LinkDefaults(Strict):
    """What a link named ``radio:MBPS`` assumes for the rest (each override-able), and where that comes from."""

    downlink_mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)
    loss: float = Field(0.0, ge=0, lt=1)
    source: str


class Radio(Strict):
    """A radio's power model; ``source`` names where its figures come from."""

    name: str
    description: str
    source: str
    active: Active
    promotion: Promotion = Promotion(duration_s=0, power_w=0)
    tail: list[Phase] = []
    standby_w: float = Field(0.0, ge=0)
    link: LinkDefaults | None = None

    def transfer_j(self, seconds: float, up_mbps: float = 0.0, down_mbps: float = 0.0) -> float:
        """Energy of ``seconds`` of transfer at these rates (one direction's rate is 0 while the other sends)."""
        return seconds * self.active.power_w(up_mbps, down_mbps)

    def _state_after(self, gap_s: float) -> tuple[float, Promotion | None]:
        """The tail's energy over a gap of ``gap_s`` seconds, and the promotion the next transfer then pays."""
        energy, t = 0.0, 0.0
        for phase in self.tail:
            if gap_s < t + phase.duration_s:
                return energy + (gap_s - t) * phase.mean_power_w, phase.promotion
            energy += phase.duration_s * phase.mean_power_w
            t += phase.duration_s
        return energy, self.promotion

    def gap_j(self, gap_s: float) -> float:
        """Tail energy over an idle gap of ``gap_s`` (``math.inf``: no next transfer soon), plus the promotion the
        next transfer pays after it."""
        energy, promotion = self._state_after(max(0.0, gap_s))
        return energy + (promotion.energy_j if promotion else 0.0)

    def promotion_s(self, gap_s: float) -> float:
        """The delay the promotion after a gap of ``gap_s`` adds to the next transfer."""
        promotion = self._state_after(max(0.0, gap_s))[1]
        return promotion.duration_s if promotion else 0.0


def shipped_radios() -> dict[str, Path]:
    """Shipped radio models by name (the ``name:`` inside each file)."""
    out = {}
    for path in sorted(RADIOS.glob("*.yaml")):
        out[yaml.safe_load(path.read_text())["name"]] = path
    return out


def read_yaml(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the {what} {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} is a YAML mapping")
    return data


def validated(schema: type[Strict], data: dict, where: object) -> Strict:
    """``data`` validated by ``schema``; any error names ``where`` and the key (with did-you-mean), on one line."""
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        detail = format_errors(error, schema).removeprefix("invalid config:\n  ").replace("\n  ", "; ")
        raise ConfigError(f"{where}: {detail}") from None


def load_radio(name_or_path: str | Path) -> Radio:
    """A shipped radio by name (lte, wifi, 3g) or a user's file in the same format."""
    shipped = shipped_radios()
    path = shipped.get(str(name_or_path), Path(name_or_path))
    if not path.is_file():
        raise ConfigError(f"unknown radio {str(name_or_path)!r}: not a file, and the shipped ones are "
                          f"{', '.join(shipped)}")
    radio = validated(Radio, read_yaml(path, "radio model"), path)
    if not all(math.isfinite(p.duration_s) for p in radio.tail):
        raise ConfigError(f"{path}: tail durations must be finite")
    return radio
