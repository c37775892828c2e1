"""The deployment model: radio energy against hand-computed values from the published parameters, the session
energy an arrival rate shares, the references and reductions, the planner's choice on records with a known answer,
one-line errors for bad profiles and links, and the predicted latency against the real server and device client."""

from __future__ import annotations

import json
import math

import pytest

from splitbench.cli import main
from splitbench.deploy.links import DeployLink, LinkSpec, parse_link
from splitbench.deploy.model import LOCAL, OFFLOAD, SPLIT, Option, Request, estimate, reduction
from splitbench.deploy.options import group_options, task_groups
from splitbench.deploy.planner import Constraints, plan
from splitbench.deploy.profiles import DeviceProfile, ServerProfile
from splitbench.deploy.radio import load_radio
from splitbench.errors import SplitbenchError

# LTE (ARO lte.conf): the DRX phases' mean power, from the ping (2 ms at 1.68 W per period) over the 1.06 W baseline.
SHORT_DRX_W = 1.06 + (1.68 - 1.06) * 0.002 / 0.02
LONG_DRX_W = 1.06 + (1.68 - 1.06) * 0.002 / 0.04
LTE_PROMOTION_J = 0.26 * 1.21
LTE_TAIL_J = 0.1 * 1.2 + 0.02 * SHORT_DRX_W + 10 * LONG_DRX_W


# ---------------------------------------------------------------- radio energy, by hand


def test_one_isolated_5_kb_lte_upload_costs_0_03_j_to_send_and_11_j_of_promotion_and_tail():
    lte = load_radio("lte")
    seconds = 5000 * 8 / 6e6  # at Huang et al.'s median LTE uplink, 6 Mbit/s
    assert lte.transfer_j(seconds, up_mbps=6) == pytest.approx(seconds * (0.43839 * 6 + 1.2))
    assert lte.transfer_j(seconds, up_mbps=6) == pytest.approx(0.0255, abs=5e-4)
    assert lte.gap_j(math.inf) == pytest.approx(LTE_PROMOTION_J + LTE_TAIL_J)
    assert 11.0 < lte.gap_j(math.inf) < 11.5
    assert lte.promotion_s(math.inf) == 0.26 and lte.promotion_s(5.0) == 0  # inside long DRX: no promotion


def test_wifi_and_3g_gaps_follow_their_profiles():
    wifi, umts = load_radio("wifi"), load_radio("3g")
    assert wifi.gap_j(math.inf) == pytest.approx(0.25 * 0.403) and wifi.gap_j(0.1) == pytest.approx(0.1 * 0.403)
    assert wifi.transfer_j(2.0) == pytest.approx(0.806)
    assert umts.gap_j(2.0) == pytest.approx(2 * 1.30)  # inside the DCH tail
    assert umts.gap_j(6.0) == pytest.approx(4 * 1.30 + 2 * 0.30 + 1.5 * 0.80)  # in FACH: FACH->DCH promotion
    assert umts.gap_j(math.inf) == pytest.approx(4 * 1.30 + 10 * 0.30 + 2.0 * 0.65)  # idle: the full promotion


def one_upload(nbytes: int, response: int = 1, device_ms: float = 0.0) -> Option:
    server = {"server_queue": 0.0, "server_decode": 0.0, "server_network": 0.0, "other": 0.0}
    return Option("upload", SPLIT, 0.5, (Request(device_ms, nbytes, response, server),))


def lte_link(up: float = 6, down: float = 1e6, rtt_ms: float = 0.0) -> DeployLink:
    spec = LinkSpec(radio="lte", uplink_mbps=up, downlink_mbps=down, rtt_ms=rtt_ms)
    return DeployLink(spec, load_radio("lte"), "lte")


def test_an_isolated_request_pays_the_whole_promotion_and_tail_and_a_rate_shares_it():
    link = lte_link()
    upload_s = 5000 * 8 / 6e6
    alone = estimate(one_upload(5000), link)
    assert alone.latency_ms == pytest.approx(upload_s * 1000, rel=1e-3)
    assert alone.transmit_j == pytest.approx(upload_s * (0.43839 * 6 + 1.2), rel=1e-3)
    assert alone.session_j == pytest.approx(alone.transmit_j + LTE_PROMOTION_J + LTE_TAIL_J, rel=1e-3)
    assert alone.promotion_ms == pytest.approx(260)
    # Two images a second: each gap (0.5 s less the upload) stays inside the tail, so no promotion and a cut tail.
    gap = 0.5 - upload_s
    shared = estimate(one_upload(5000), link, rate=2.0)
    tail = 0.1 * 1.2 + 0.02 * SHORT_DRX_W + (gap - 0.12) * LONG_DRX_W
    assert shared.session_j == pytest.approx(shared.transmit_j + tail, rel=1e-3)
    assert shared.promotion_ms == 0 and not shared.saturated
    assert shared.session_j < alone.session_j / 15
    assert estimate(one_upload(5000), link, rate=1000.0).saturated  # 5 kB at 6 Mbit/s: 150 images/s at most


def test_compute_energy_is_active_power_while_computing_and_idle_power_while_waiting(tmp_path):
    device = DeviceProfile.load(write_device(tmp_path))
    link = lte_link(rtt_ms=100)
    e = estimate(one_upload(10, device_ms=20), link, None, device.power)
    assert e.latency_ms == pytest.approx(120, rel=1e-3)
    assert e.compute_j == pytest.approx(2.0 * 0.020 + 0.1 * 0.100, rel=1e-2)
    assert e.device_j == pytest.approx(e.compute_j + e.session_j)


def test_reduction_is_stated_as_papers_state_it():
    assert reduction(4.6, 100.0) == pytest.approx(95.4)
    assert reduction(150, 100) == pytest.approx(-50)


# ---------------------------------------------------------------- links and profiles


def test_links_by_name_take_their_radio_defaults_and_overrides():
    link = parse_link("lte:5")
    assert (link.spec.uplink_mbps, link.spec.downlink_mbps, link.spec.rtt_ms) == (5, 13, 70)
    assert link.radio.name == "lte"
    link = parse_link("wifi:20,rtt=5,down=80,loss=0.01")
    assert (link.spec.downlink_mbps, link.spec.rtt_ms, link.spec.loss) == (80, 5, 0.01)
    with pytest.raises(SplitbenchError, match="unknown radio 'lt'.*lte"):
        parse_link("lt:5")
    with pytest.raises(SplitbenchError, match="unknown option 'rt'"):
        parse_link("lte:5,rt=3")


def write_device(tmp_path, **extra) -> str:
    profile = {"name": "test device", "source": "made up for a test",
               "power": {"compute_w": 2.0, "idle_w": 0.1, "source": "assumed"},
               "timing": {"records_scale": 1.0, "source": "the records"}, **extra}
    path = tmp_path / "device.yaml"
    path.write_text(json.dumps(profile))
    return str(path)


# ---------------------------------------------------------------- records → options → tables and plans


def record(method: str, variant: str, rate: dict, top1: float, nbytes: float, device_ms: float = 1.0,
           server_ms: float = 1.0, run: str | None = None) -> dict:
    return {"method": method, "variant": variant, "task": "classification", "dataset": "shapes", "split": "val",
            "backbone": "resnet10n", "rate_param": rate, "status": "ok", "run": run or f"{method}-{variant}-{rate}",
            "metrics": {"top1": top1}, "data_size": {"bytes_mean": nbytes},
            "encoder": {"params": 0, "size_bits": 0, "macs": 0},
            "timing": {"mobile_network_ms_mean": device_ms, "entropy_encode_ms_mean": 0.0,
                       "entropy_decode_ms_mean": 0.0, "server_network_ms_mean": server_ms}}


@pytest.fixture
def records() -> list[dict]:
    """An unsplit model too slow for the device (200 ms), three student rate points, one JPEG point."""
    return [record("classifier", "", {}, 0.90, 12288, device_ms=0.0, server_ms=200.0, run="classifier-resnet10n"),
            record("entropic_student", "fp", {"beta": 0.02}, 0.88, 20000),
            record("entropic_student", "fp", {"beta": 0.1}, 0.80, 2000),
            record("entropic_student", "fp", {"beta": 1.0}, 0.60, 200),
            record("input_codec", "jpeg", {"quality": 50}, 0.85, 4000)]


def options_of(records, tmp_path, **kwargs) -> list[Option]:
    (group, recs), = task_groups(records).items()
    return group_options(recs, "top1", DeviceProfile.load(write_device(tmp_path)), ServerProfile.load(), **kwargs)


def test_the_references_come_from_the_unsplit_record(records, tmp_path):
    options = options_of(records, tmp_path)
    local, offload = options[:2]
    assert (local.kind, local.local_ms, local.requests) == (LOCAL, 200.0, ())
    assert offload.kind == OFFLOAD and offload.requests[0].server_total_ms == pytest.approx(200.0 + 5.0)  # + queue
    assert offload.requests[0].request_bytes > 12288 + 100  # raw pixels + HTTP headers
    assert [o.kind for o in options[2:]] == [SPLIT] * 4
    jpeg = options_of(records, tmp_path, offload="jpeg:50")[1]
    assert jpeg.label == "full offloading (JPEG quality=50)"
    with pytest.raises(SplitbenchError, match="jpeg:50"):
        options_of(records, tmp_path, offload="webp:50")


def test_the_planner_picks_the_known_best(records, tmp_path):
    options = options_of(records, tmp_path)
    link = parse_link("lte:1,rtt=50")  # 20 kB take 160 ms up at 1 Mbit/s; 2 kB 16 ms
    power = DeviceProfile.load(write_device(tmp_path)).power
    # At least 79%: the beta=0.1 student (2 kB) is the fastest (JPEG sends twice its bytes, the rest are slower).
    best = plan(options, link, Constraints(min_accuracy=0.79), power=power).best
    assert best.option.label.endswith("beta=0.1")
    # Within 100 ms: local computing (200 ms) and the 20 kB points are out; the most accurate left is JPEG.
    best = plan(options, link, Constraints(max_latency_ms=100), power=power).best
    assert best.option.label.startswith("JPEG")
    # Energy within 1 J per isolated image: only local computing (no radio) fits.
    assert plan(options, link, Constraints(max_energy_j=1.0), power=power).best.option.kind == LOCAL
    with pytest.raises(SplitbenchError, match="no configuration meets"):
        plan(options, link, Constraints(min_accuracy=0.95), power=power)


def write_records(tmp_path, records) -> str:
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_deploy_writes_tables_for_each_link(records, tmp_path, capsys):
    out = tmp_path / "deploy"
    argv = ["deploy", write_records(tmp_path, records), "--device", write_device(tmp_path), "--link", "lte:5",
            "--link", "wifi:20", "--rate", "1", "--out", str(out), "--no-figures"]
    assert main(argv) == 0
    md = (out / "deploy.md").read_text()
    assert "#### `lte:5`, 1 images/s" in md and "#### `wifi:20`" in md and "Huang et al." in md
    rows = (out / "deploy.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 6  # a header, then per link: 2 references, 3 students, JPEG
    assert "\\begin{tabular}" in (out / "deploy.tex").read_text()


def test_plan_names_the_best_configuration(records, tmp_path, capsys):
    argv = ["plan", write_records(tmp_path, records), "--device", write_device(tmp_path), "--link", "lte:1,rtt=50",
            "--min-accuracy", "0.79"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        "best: Entropic Student (fp) · resnet10n beta=0.1: latency p50")


@pytest.mark.parametrize(("change", "message"), [
    ({"power": {"compute_w": 2.0, "idel_w": 0.1, "source": "x"}}, "unknown key 'power.idel_w' (did you mean "
                                                                  "'idle_w'?)"),
    ({"timing": {"records_scale": -1, "source": "x"}}, "timing.records_scale"),
    ({"measured": ["missing.json"]}, "cannot read the measured profile"),
])
def test_a_profile_typo_is_one_line_naming_it_and_nothing_is_written(records, tmp_path, capsys, change, message):
    out = tmp_path / "deploy"
    argv = ["deploy", write_records(tmp_path, records), "--device", write_device(tmp_path, **change), "--link",
            "lte:5", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_bad_link_or_rate_is_one_line_and_nonzero(records, tmp_path, capsys):
    base = ["deploy", write_records(tmp_path, records), "--device", write_device(tmp_path), "--out",
            str(tmp_path / "o")]
    assert main([*base, "--link", "lte:fast"]) == 2
    assert "uplink Mbit/s must be a number" in capsys.readouterr().err
    assert main([*base, "--link", "lte:5", "--rate", "0"]) == 2
    assert "--rate" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- the model against the runtime

CHECK_LINKS = [LinkSpec(name="1 Mbit/s up, 5 down, RTT 50 ms", uplink_mbps=1, downlink_mbps=5, rtt_ms=50),
               LinkSpec(name="5 Mbit/s up, 13 down, RTT 70 ms, 1% loss", uplink_mbps=5, downlink_mbps=13, rtt_ms=70,
                        loss=0.01),
               LinkSpec(name="0.3 Mbit/s up, 2 down, RTT 30 ms", uplink_mbps=0.3, downlink_mbps=2, rtt_ms=30)]


def test_predicted_latency_is_within_10_percent_of_the_real_server_and_client(tiny_export, tiny_server):
    pytest.importorskip("onnxruntime")
    import torch

    from splitbench.deploy.check import check
    from splitbench.runtime.app import ServeSettings, create_app
    from splitbench.runtime.dataset_inputs import dataset_samples
    from splitbench.runtime.device import Device
    from splitbench.runtime.serve import ThreadedServer, free_port

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    samples = dataset_samples("shapes", "val", 32, 32)
    settings = ServeSettings(port=free_port(), max_batch=8, max_delay_ms=2)
    try:
        with ThreadedServer(create_app(tiny_server, settings), settings) as url:
            rows = check(Device(tiny_export[1]), samples[:16], samples[16:], url, CHECK_LINKS)
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        assert abs(row.error) < 0.10, f"{row.link}: predicted {row.predicted_ms:.1f} ms, measured {row.measured_ms:.1f}"


# ---------------------------------------------------------------- the multi-task scenario

TASK_METRIC = {"classification": "top1", "detection": "map", "segmentation": "miou"}


def task_record(method: str, task: str, nbytes: float, device_ms: float, server_ms: float, **metrics) -> dict:
    r = record(method, "fp" if method != "classifier" else "", {"beta": 0.1} if method != "classifier" else {},
               0.5, nbytes, device_ms=device_ms, server_ms=server_ms, run=f"{method}-{task}")
    r["task"], r["metrics"] = task, metrics or {TASK_METRIC[task]: 0.5}
    return r


def test_the_multitask_model_uploads_once_where_single_task_students_upload_three_times(tmp_path):
    tasks = list(TASK_METRIC)
    combined = task_record("multitask", "multitask", 2000, 3.0, 30.0, top1=0.6, map=0.2, miou=0.4)
    records = [combined, *(task_record("multitask", t, 2000, 3.0, 30.0) for t in tasks),
               *(task_record("entropic_student", t, 2000, 3.0, 10.0) for t in tasks),
               *(task_record("classifier", t, 12288, 0.0, 100.0) for t in tasks)]
    from splitbench.deploy.multitask import multitask_section, scenario_options

    device, server = DeviceProfile.load(write_device(tmp_path)), ServerProfile.load()
    options, missing = scenario_options(combined, records, device, server)
    assert missing == [] and [len(o.requests) for o in options] == [1, 3, 0]
    assert options[2].local_ms == 300.0  # three unsplit models one after another on the device
    link = parse_link("lte:1,rtt=50")
    multi, single, local = (estimate(o, link, None, device.power) for o in options)
    # The students' three uploads queue on the 1 Mbit/s uplink behind each other (their encoders run while the first
    # is sent); their servers take 10 + 5 ms (queue) each, the multi-task server 30 + 5 ms for all three heads.
    upload_ms = options[0].requests[0].request_bytes * 8 / 1e6 * 1000
    assert single.latency_ms - multi.latency_ms == pytest.approx(2 * upload_ms - 20, rel=1e-6)
    assert single.transmit_j == pytest.approx(3 * multi.transmit_j, rel=0.05)
    md, tex = multitask_section(records, device, server, [link], None)
    assert any("single-task students (3 encoders, 3 uploads)" in line for line in md) and tex


def test_report_adds_the_deployment_views_when_given_profiles(records, tmp_path):
    out = tmp_path / "report"
    argv = ["report", write_records(tmp_path, records), "--out", str(out), "--device", write_device(tmp_path),
            "--link", "wifi:20", "--rate", "5"]
    assert main(argv) == 0
    md = (out / "report.md").read_text()
    assert "## Deployment: latency and device energy per image" in md and "#### `wifi:20`, 5 images/s" in md
    assert {"deploy.csv", "deploy.tex", "latency_bandwidth_wifi_20.png", "energy_rate_wifi_20.pdf",
            "rd.png"} <= {p.name for p in out.iterdir()}
    assert main(["report", write_records(tmp_path, records), "--out", str(tmp_path / "r2"), "--link", "lte:5"]) == 2


def test_measured_profiles_replace_a_records_timings_for_their_run_and_codec_setting():
    device = DeviceProfile.load("device_this_cpu")  # shipped: measured on this project's CPU, power placeholders
    assert "placeholders" in device.power.source and "not a phone" in device.source
    measured = json.loads((device.path.parent / "this_cpu" / "es-beta0.02.json").read_text())["sizes"]["64x64"]
    student = record("entropic_student", "fp", {"beta": 0.02}, 0.5, 900, device_ms=99.0,
                     run="entropic_student-fp-resnet10n-beta0.02")
    ms, source = device.compute_ms(student)
    assert ms == pytest.approx(measured["device_network_ms"]["p50"] + measured["entropy_encode_ms"]["p50"])
    assert source == "measured (es-beta0.02.json)"
    webp = record("input_codec", "webp", {"quality": 20}, 0.5, 300, device_ms=99.0)
    assert device.compute_ms(webp)[1] == "measured (webp-q20.json)"
    other = record("input_codec", "webp", {"quality": 30}, 0.5, 300, device_ms=99.0)
    assert device.compute_ms(other) == (99.0, "records x 1")
    server = ServerProfile.load("server_this_cpu")
    stages, source = server.stages_ms(student)
    assert source.startswith("measured") and stages["server_queue"] > 0


def test_a_link_file_with_a_trace_and_a_radio(tmp_path):
    (tmp_path / "up.trace").write_text("\n".join(str(ms) for ms in range(1, 11)) + "\n")  # 12 Mbit/s
    (tmp_path / "link.yaml").write_text("radio: lte\ntrace: up.trace\nrtt_ms: 20\n")
    link = parse_link(str(tmp_path / "link.yaml"))
    e = estimate(one_upload(3000), link)
    assert e.latency_ms == pytest.approx(2 + 0 + 20, abs=1.5)  # 2 packets, one per ms, + RTT; the answer: 1 ms
    assert e.transmit_j > 0
    (tmp_path / "bad.yaml").write_text("radio: lte\nuplink_mpbs: 5\n")
    with pytest.raises(SplitbenchError, match="unknown key 'uplink_mpbs' \\(did you mean 'uplink_mbps'\\?\\)"):
        parse_link(str(tmp_path / "bad.yaml"))


def test_the_crossovers_say_on_which_bandwidths_a_configuration_beats_its_reference():
    """A split beats local computing on wide links and full offloading on narrow ones: both directions and a
    window in between are reported, log-interpolated."""
    from splitbench.deploy.report import better_where, crossings

    xs = [0.1, 1.0, 10.0, 100.0]
    assert crossings(xs, [30, 20, 5, 4], [10] * 4) == [pytest.approx(10 ** (0 + 10 / 15))]
    assert better_where(xs, [30, 20, 5, 4], [10] * 4) == "≥ 4.64"  # overtakes as the link widens
    assert better_where(xs, [5, 5, 20, 20], [10] * 4) == "≤ 2.15"  # better only on narrow links
    assert better_where(xs, [20, 5, 5, 20], [10] * 4) == "0.464–21.5"
    assert better_where(xs, [5] * 4, [10] * 4) == "all" and better_where(xs, [20] * 4, [10] * 4) == "never"
