"""Device and server profiles: where the model's compute times and power figures come from, and what they are.

A **device profile** (YAML) holds the device's power figures and its compute times. Times come from measured
profiles (``splitbench device --profile OUT.json``, run on the device, or on this machine with ``--threads 1``),
matched to records by run (a bundle) or by codec and quality (``--codec``); a record without a measurement falls
back to its own ``evaluate`` timings times ``timing.records_scale``. Every figure carries a ``source`` naming
where it came from, so a table never passes an assumption off as a measurement.

A **server profile** does the same for the server's stages (decode, server network, the batcher's wait for a
lone request, HTTP transport) and the size of its answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from splitbench.deploy.radio import Strict, read_yaml, validated
from splitbench.errors import ConfigError

PROFILES = Path(__file__).parent / "profiles"
DEFAULT_SERVER = "server_records"
OFF_LINK_STAGES = ("device_network", "entropy_encode", "server_queue", "server_decode", "server_network")


class Power(Strict):
    compute_w: float = Field(gt=0)  # while the device computes (network, entropy coding, the local model)
    idle_w: float = Field(ge=0)  # while it waits for the answer
    source: str


class Timing(Strict):
    records_scale: float = Field(1.0, gt=0)  # device ms = a record's evaluate ms x this, where nothing is measured
    source: str


class DeviceProfileFile(Strict):
    name: str
    source: str
    power: Power
    timing: Timing
    measured: list[Path] = []  # `splitbench device --profile` outputs (relative to the profile file)
    local_ms: dict[str, float] = {}  # measured whole-model ms on the device, by the unsplit run's name


class ServerProfileFile(Strict):
    name: str
    source: str
    records_scale: float = Field(1.0, gt=0)  # server ms = a record's decode + server network ms x this
    queue_ms: float = Field(0.0, ge=0)  # the batcher's wait for a lone request (serve --max-delay-ms)
    http_ms: float = Field(0.0, ge=0)  # per request: HTTP/JSON transport not in any stage
    response_bytes: int = Field(400, gt=0)  # an answer's bytes on the wire (status line, headers, JSON)
    measured: list[Path] = []  # `splitbench device --profile` outputs: their server stages replace the above
    unsplit_ms: dict[str, float] = {}  # measured ms of the whole unsplit model on the server, by run name


@dataclass(frozen=True)
class Measured:
    """One measured profile's p50s (ms, bytes) for one run or codec setting, and the file it came from."""

    source: Path
    ms: dict[str, float]
    bytes: dict[str, float]


def measured_key(run: str | None, device: dict[str, Any]) -> tuple:
    """What a measurement is matched to records by: the codec setting (full offloading) or the run (a bundle)."""
    if "codec" in device:
        return ("codec", str(device["codec"]), float(device.get("quality", 0)))
    return ("run", str(run))


def record_key(record: dict) -> tuple:
    if record["method"] == "input_codec":
        quality = record["rate_param"].get("quality", 0)
        return ("codec", str(record["variant"]), float(quality))
    return ("run", str(record.get("run")))


def read_measured(path: Path) -> tuple[tuple, Measured]:
    """A ``splitbench device --profile`` file: its key and the p50 of each stage (its one image size)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the measured profile {path}: {error}") from None
    return parse_measured(data, Path(path))


def parse_measured(data: dict, path: Path) -> tuple[tuple, Measured]:
    """A measured profile (:func:`splitbench.runtime.client.profile`) read from ``path``: its key and p50s."""
    try:
        sizes = data["sizes"]
        if len(sizes) != 1:
            raise ConfigError(f"{path}: measured at {len(sizes)} image sizes ({', '.join(sizes)}); deploy reads "
                              f"profiles of one size (the records' size)")
        (stages,) = sizes.values()
        ms = {k.removesuffix("_ms"): float(v["p50"]) for k, v in stages.items() if k.endswith("_ms") and v}
        if "off_link" in ms:  # the stages' p50s sum to the p50 of their sum: "other" takes the difference
            ms["other"] = ms["off_link"] - sum(ms[k] for k in OFF_LINK_STAGES)
        sizes_b = {k.removesuffix("_bytes"): float(v["p50"]) for k, v in stages.items() if k.endswith("_bytes") and v}
        key = measured_key(data.get("run"), data["device"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"cannot read the measured profile {path} (written by splitbench device --profile): "
                          f"{type(error).__name__}: {error}") from None
    return key, Measured(Path(path), ms, sizes_b)


def _resolve(name_or_path: str | Path, kind: str) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = PROFILES / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(p.stem for p in sorted(PROFILES.glob(f"{kind}_*.yaml")))
    raise ConfigError(f"{kind} profile {str(name_or_path)!r} is not a file nor a shipped profile (shipped: {known})")


def _measured(paths: list[Path], base: Path) -> dict[tuple, Measured]:
    return dict(read_measured(p if p.is_absolute() else base / p) for p in paths)


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    source: str
    power: Power
    timing: Timing
    measured: dict[tuple, Measured] = field(default_factory=dict)
    local_ms: dict[str, float] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, name_or_path: str | Path) -> DeviceProfile:
        path = _resolve(name_or_path, "device")
        spec = validated(DeviceProfileFile, read_yaml(path, "device profile"), path)
        return cls(spec.name, spec.source, spec.power, spec.timing, _measured(spec.measured, path.parent),
                   spec.local_ms, path)

    def compute_ms(self, record: dict) -> tuple[float, str]:
        """The device's ms for a record's device half (network + entropy/codec encode), and where it came from."""
        found = self.measured.get(record_key(record))
        if found is not None:
            return found.ms["device_network"] + found.ms["entropy_encode"], f"measured ({found.source.name})"
        t = record.get("timing", {})
        ms = (t.get("mobile_network_ms_mean", 0.0) + t.get("entropy_encode_ms_mean", 0.0)) * self.timing.records_scale
        return ms, f"records x {self.timing.records_scale:g}"

    def local_model_ms(self, record: dict) -> tuple[float, str]:
        """The device's ms for the whole unsplit model of ``record`` (an unsplit run's record)."""
        if record.get("run") in self.local_ms:
            return self.local_ms[record["run"]], "measured (profile local_ms)"
        t = record.get("timing", {})
        return t.get("server_network_ms_mean", 0.0) * self.timing.records_scale, \
            f"records x {self.timing.records_scale:g}"

    def request_header_bytes(self, record: dict) -> float | None:
        found = self.measured.get(record_key(record))
        return None if found is None else found.bytes.get("request_headers")


@dataclass(frozen=True)
class ServerProfile:
    spec: ServerProfileFile
    measured: dict[tuple, Measured] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_SERVER) -> ServerProfile:
        path = _resolve(name_or_path, "server")
        spec = validated(ServerProfileFile, read_yaml(path, "server profile"), path)
        return cls(spec, _measured(spec.measured, path.parent), path)

    @property
    def name(self) -> str:
        return self.spec.name

    def stages_ms(self, record: dict) -> tuple[dict[str, float], str]:
        """The server's ms per stage for a record (queue, decode, network, HTTP), and where they came from. (An
        unsplit run's record decodes raw pixels and runs the whole network: the full-offloading server.)"""
        found = self.measured.get(record_key(record))
        if found is not None:
            ms = found.ms
            return {"server_queue": ms["server_queue"], "server_decode": ms["server_decode"],
                    "server_network": ms["server_network"], "other": ms["other"]}, f"measured ({found.source.name})"
        t, k = record.get("timing", {}), self.spec.records_scale
        network, source = t.get("server_network_ms_mean", 0.0) * k, f"records x {k:g}"
        if record.get("run") in self.spec.unsplit_ms:
            network, source = self.spec.unsplit_ms[record["run"]], f"{source}, network measured (profile unsplit_ms)"
        return {"server_queue": self.spec.queue_ms, "server_decode": t.get("entropy_decode_ms_mean", 0.0) * k,
                "server_network": network, "other": self.spec.http_ms}, source

    def response_bytes(self, record: dict) -> float:
        found = self.measured.get(record_key(record))
        return found.bytes.get("response", self.spec.response_bytes) if found else self.spec.response_bytes
