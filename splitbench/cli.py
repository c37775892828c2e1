"""The ``splitbench`` command. Subcommands are thin: they parse, then call library functions."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from splitbench.errors import SplitbenchError

log = logging.getLogger("splitbench")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="%H:%M:%S", handlers=[RichHandler(show_path=False, rich_tracebacks=False)])
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # matplotlib's PDF backend is chatty at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request of the device client


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML experiment (a path, or a name under splitbench/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted, repeatable), e.g. --set method_args.beta=0.5")
    p.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")


def _add_deploy_args(p: argparse.ArgumentParser, required: bool) -> None:
    what = "" if required else " (with --link: add the deployment tables and figures)"
    p.add_argument("--device", required=required, help="device profile YAML (power figures, measured times)" + what)
    p.add_argument("--server", default="server_records", help="server profile YAML (default: the records' own "
                                                              "timings, serve's default batching wait)")
    p.add_argument("--link", action="append", required=required, default=[] if not required else None,
                   help="RADIO:UP_MBPS[,down=MBPS][,rtt=MS][,loss=P] (lte:5, wifi:20, 3g:1) or a link YAML file; "
                        "repeat for several")
    p.add_argument("--rate", type=float, help="arrival rate, images per second (default: one isolated request)")
    p.add_argument("--offload", default="raw", help="the full-offloading reference: raw (pixels) or CODEC:QUALITY "
                                                    "(an input-codec record, e.g. jpeg:90)")
    p.add_argument("--local", help="the unsplit run for local computing (default: the best unsplit record)")
    if required:
        p.add_argument("--metric", help="accuracy metric (default: the task's, e.g. top1)")


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from splitbench.codecs import CODECS
    from splitbench.data import DATASETS
    from splitbench.methods import METHODS
    from splitbench.models import BACKBONES
    from splitbench.tasks import TASKS

    registry = {"methods": METHODS, "backbones": BACKBONES, "datasets": DATASETS, "codecs": CODECS,
                "tasks": TASKS}[args.what]
    table = Table(title=f"splitbench {args.what}")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, text in registry.describe().items():
        table.add_row(name, text)
    Console().print(table)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from splitbench.experiment import load_configs
    from splitbench.runs import train_experiment

    configs = load_configs(args.config, args.overrides)
    for i, config in enumerate(configs, 1):
        if len(configs) > 1:
            log.info("sweep point %d/%d: %s", i, len(configs), config.run_name())
        train_experiment(config, args.out, resume=args.resume, progress=not args.no_progress)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from splitbench.bench.records import headline
    from splitbench.experiment import load_configs
    from splitbench.runs import evaluate_experiment

    configs = load_configs(args.config, args.overrides)
    if args.checkpoint and len(configs) > 1:
        raise SplitbenchError("--checkpoint names one model, but the config sweeps several points")
    for config in configs:
        record = evaluate_experiment(config, args.out, checkpoint=args.checkpoint, progress=not args.no_progress)
        mib = record["encoder"]["size_bits"] / 8 / 2**20
        log.info("%s: %s, encoder %.3f MiB", record["run"], headline(record), mib)
    log.info("records appended to %s", args.out / "results.jsonl")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from splitbench.runtime.export import export_run

    out = export_run(args.run_dir, args.out)
    log.info("exported %s -> %s (device.onnx, tables.npz, manifest.json)", args.run_dir, out)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from splitbench.runtime.app import ServeSettings
    from splitbench.runtime.serve import serve

    settings = ServeSettings(host=args.host, port=args.port, token=args.token or os.environ.get("SPLITBENCH_TOKEN"),
                             max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                             max_body_bytes=args.max_body_bytes, queue_size=args.queue_size, timeout_s=args.timeout_s)
    log.info("serving %s on http://%s:%d (batches of up to %d, %g ms)", args.target, settings.host, settings.port,
             settings.max_batch, settings.max_delay_ms)
    serve(args.target, settings, args.run, args.codec, args.max_pixels)
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    import json
    import os

    from splitbench.runtime.client import ClientOptions, profile, run_device
    from splitbench.runtime.link import Link

    if (args.bundle is None) == (args.codec is None):
        raise SplitbenchError("pass a bundle, or --codec NAME --quality Q (the full-offloading reference), not both")
    if args.codec is not None:
        from splitbench.runtime.codec_device import CodecDevice

        device, image_size = CodecDevice(args.codec, args.quality), args.image_size
    else:
        from splitbench.runtime.device import Device

        device = Device(args.bundle, threads=args.threads)
        image_size = args.image_size or device.manifest["input"]["height"]
    if args.images:
        from splitbench.runtime.inputs import folder_samples

        samples = folder_samples(args.images, args.num_samples)
    else:
        from splitbench.runtime.dataset_inputs import dataset_samples

        samples = dataset_samples(args.data, args.split, args.num_samples, image_size, args.seed)
    link = Link.build(args.uplink_mbps, args.downlink_mbps, args.rtt_ms, args.loss, args.trace, args.seed)
    options = ClientOptions(args.server, args.token or os.environ.get("SPLITBENCH_TOKEN"), args.concurrency,
                            args.timeout_s)
    record = run_device(device, samples, options, link)
    text = json.dumps(record, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if args.profile:
        args.profile.write_text(json.dumps(profile(record), indent=1) + "\n")
    total = record["latency_ms"].get("total", {})
    accuracy = record["accuracy"]
    log.info("%d images: %d answered, %d refused, %d failed (%d retried); top-1 %s; %.0f B payload + %.0f B HTTP "
             "per image; latency p50 %.1f ms, p99 %.1f ms", record["num_images"], record["answered"],
             record["refused"], record["failed"], record["retried"],
             "n/a" if accuracy is None else f"{accuracy['top1']:.3f}", record["bytes"]["payload"].get("mean", 0),
             record["bytes"]["wire"].get("mean", 0) - record["bytes"]["payload"].get("mean", 0),
             total.get("p50", 0), total.get("p99", 0))
    return 0 if record["answered"] == record["num_images"] else 1


def cmd_report(args: argparse.Namespace) -> int:
    from splitbench.bench.records import load_records
    from splitbench.bench.report import write_report

    if bool(args.device) != bool(args.link):
        raise SplitbenchError("the deployment views need both --device PROFILE and --link LINK (or neither)")
    deploy = _scenario(args) if args.device else None
    paths = write_report(load_records(args.results), args.out, metric=args.metric, anchor=args.anchor,
                         log_x=args.log_x, deploy=deploy)
    for path in paths.values():
        log.info("wrote %s", path)
    return 0


def _scenario(args: argparse.Namespace):
    """The profiles, links and references of the deploy/plan/report options (all checked before any work)."""
    from splitbench.deploy.links import parse_link
    from splitbench.deploy.profiles import DeviceProfile, ServerProfile
    from splitbench.deploy.report import Scenario

    if args.rate is not None and not args.rate > 0:
        raise SplitbenchError(f"--rate is images per second (> 0), got {args.rate}; omit it for one isolated request")
    scenario = Scenario(DeviceProfile.load(args.device), ServerProfile.load(args.server), args.rate, args.offload,
                        args.local, args.metric)
    return scenario, [parse_link(text) for text in args.link]


def cmd_deploy(args: argparse.Namespace) -> int:
    from splitbench.bench.records import load_records
    from splitbench.deploy.report import write_deploy

    records = load_records(args.results)
    scenario, links = _scenario(args)
    paths, _ = write_deploy(records, args.out, scenario, links, figures=not args.no_figures)
    for path in paths.values():
        log.info("wrote %s", path)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from splitbench.bench.records import load_records, resolve_metric
    from splitbench.deploy.model import LOCAL
    from splitbench.deploy.options import group_options, task_groups
    from splitbench.deploy.planner import Constraints, describe, plan

    records = load_records(args.results)
    scenario, links = _scenario(args)
    if len(links) != 1:
        raise SplitbenchError("plan takes one --link (a bandwidth trace: a link file with trace:)")
    constraints = Constraints(args.min_accuracy, args.max_latency_ms, args.max_energy_j)
    groups = task_groups(records)
    if args.task:
        groups = {g: r for g, r in groups.items() if g[0] == args.task}
    if len(groups) != 1:
        raise SplitbenchError(f"the records hold {len(groups)} task groups ({', '.join('/'.join(g) for g in groups)}"
                              f"); pick one with --task" if groups else "no successful records of that task")
    (group, recs), = groups.items()
    metric = resolve_metric(recs, scenario.metric, group[0])
    options = group_options(recs, metric, scenario.device, scenario.server, scenario.offload, scenario.local)
    if args.no_local:
        options = [o for o in options if o.kind != LOCAL]
    result = plan(options, links[0], constraints, scenario.rate, scenario.device.power, args.objective)
    print(f"{len(result.ranked)} of {len(options)} configurations meet the constraints over {links[0].label} "
          f"({scenario.rate_text}); ranked by {result.objective}:")
    for i, e in enumerate(result.ranked[:args.top], 1):
        print(f"{i:3d}. {e.option.label}: {describe(e)}")
    print(f"best: {result.best.option.label}: {describe(result.best)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from splitbench.bench.suite import run_suite

    failed = run_suite(args.suite, args.out, overrides=args.overrides, progress=not args.no_progress,
                       retrain=args.retrain, launcher=args.launcher, cluster=args.cluster, address=args.address,
                       max_parallel=args.max_parallel, detach=args.detach, resources=args.resources)
    return 1 if failed else 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from splitbench.bench.quickstart import run_quickstart

    run_quickstart(args.out, progress=not args.no_progress, retrain_teacher=args.retrain_teacher)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitbench", description=__doc__ and "Supervised compression for "
                                     "split computing: train, evaluate and compare methods on one protocol.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in CI logs)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="teacher, Entropic Student β sweep, JPEG/WebP sweep, report")
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    p.add_argument("--retrain-teacher", action="store_true",
                   help="train the teacher from scratch instead of installing the one shipped with splitbench")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("train", help="train a config (every point of its sweep)")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a config and append records to OUT/results.jsonl")
    _add_config_args(p)
    p.add_argument("--checkpoint", type=Path, help="weights to evaluate (default: OUT/<run>/model.safetensors)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="a trained run's device half as a bundle that runs without PyTorch")
    p.add_argument("run_dir", type=Path, help="the trained run's folder (OUT/<run name>)")
    p.add_argument("--out", type=Path, required=True, help="the bundle folder to write (must not exist)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", help="the edge server: HTTP, dynamic batching, decodes bitstreams and predicts")
    p.add_argument("target", type=Path, help="a trained run's folder, or a bundle (then pass --run)")
    p.add_argument("--run", type=Path, help="with a bundle: the run folder it was exported from (checked)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: env SPLITBENCH_TOKEN)")
    p.add_argument("--max-batch", type=int, default=16, help="dynamic batching: most requests per batch")
    p.add_argument("--max-delay-ms", type=float, default=5.0, help="dynamic batching: longest wait for a batch")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger bodies get 413")
    p.add_argument("--queue-size", type=int, default=256, help="requests waiting beyond this get 503")
    p.add_argument("--timeout-s", type=float, default=10.0, help="per request: body arrival, then the answer")
    p.add_argument("--codec", help="serve an unsplit run behind this image codec (jpeg, webp, ...): the "
                                   "full-offloading reference")
    p.add_argument("--max-pixels", type=int, help="with --codec: larger images (by their header) are refused "
                                                  "before decoding (default 4096 x 4096)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("device", help="the torch-free device: encode images, send them over an emulated link")
    p.add_argument("bundle", type=Path, nargs="?", help="an exported bundle (splitbench export), or pass --codec")
    p.add_argument("--codec", help="no bundle: code each image with this codec (jpeg, webp, ...) and send it whole")
    p.add_argument("--quality", type=float, default=75, help="with --codec: its quality (default 75)")
    p.add_argument("--image-size", type=int, help="dataset images' size (default: the bundle's; with --codec, the "
                                                  "dataset's)")
    p.add_argument("--server", required=True, help="the edge server's URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--data", default="shapes", help="a dataset name (default shapes; loading it uses torch)")
    p.add_argument("--split", default="val")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="dataset seed; also the link's loss RNG")
    p.add_argument("--images", type=Path, help="a folder of images instead (FOLDER/<class>/<image> labels them)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight (keep-alive connections)")
    p.add_argument("--uplink-mbps", type=float, help="emulated uplink rate (default: no limit)")
    p.add_argument("--downlink-mbps", type=float, help="emulated downlink rate (default: no limit)")
    p.add_argument("--rtt-ms", type=float, default=0.0, help="emulated round-trip time")
    p.add_argument("--loss", type=float, default=0.0, help="packet loss probability (1500-byte packets)")
    p.add_argument("--trace", type=Path, help="a Mahimahi trace (ms per packet opportunity) instead of the rates")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per request")
    p.add_argument("--token", help="the server's token (default: env SPLITBENCH_TOKEN)")
    p.add_argument("--out", type=Path, help="write the record (JSON) here")
    p.add_argument("--profile", type=Path, help="write measured device ms per stage per image size (JSON) here")
    p.set_defaults(func=cmd_device)

    p = sub.add_parser("bench", help="run a suite (methods x rate points), resumable; then report")
    p.add_argument("suite", help="suite YAML (a path, or a name under splitbench/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key in every experiment of the suite (repeatable)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="output folder (default: runs)")
    p.add_argument("--retrain", action="store_true", help="train the entries marked shipped instead of installing "
                                                         "the weights splitbench ships for them")
    p.add_argument("--launcher", choices=["inline", "submitit", "ray"], default="inline",
                   help="where points run: in this process one after another (default), as submitit jobs, as "
                        "Ray tasks; resources from the suite's launcher: block")
    p.add_argument("--cluster", choices=["slurm", "local", "debug"],
                   help="with --launcher submitit: Slurm, subprocesses of this machine, or in this process "
                        "(default: Slurm where srun is found, else local)")
    p.add_argument("--address", help="with --launcher ray: the cluster to join (default: start a local one)")
    p.add_argument("--max-parallel", type=int, metavar="N", help="most jobs in flight (default: no cap on "
                   "Slurm and Ray, 1 for the local and debug executors)")
    p.add_argument("--resources", action="append", default=[], metavar="KEY=VALUE",
                   help="a launcher: key for every point, over the suite's (repeatable), e.g. --resources "
                        "partition=gpu --resources account=mylab")
    p.add_argument("--detach", action="store_true", help="submit and return (Slurm); the same command again merges "
                   "what finished, submits the rest and submits nothing twice")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="tables and figures from results.jsonl files")
    p.add_argument("results", nargs="+", type=Path, help="results.jsonl files (merged)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metric", help="metric to plot (default: the task's, e.g. top1)")
    p.add_argument("--anchor", action="append", help="curve to compute BD-rate against (default: JPEG); repeat "
                                                     "for one table per anchor (--anchor jpeg --anchor webp)")
    p.add_argument("--log-x", action="store_true", help="log-scale data size axis")
    _add_deploy_args(p, required=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("deploy", help="latency and device energy per image over links, vs local computing and full "
                                      "offloading: tables and figures")
    p.add_argument("results", nargs="+", type=Path, help="results.jsonl files (merged)")
    _add_deploy_args(p, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for deploy.md/.csv/.tex and the figures")
    p.add_argument("--no-figures", action="store_true", help="tables only (the sweeps take a few seconds per link)")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("plan", help="which configuration to deploy under a constraint (accuracy, latency, energy)")
    p.add_argument("results", nargs="+", type=Path, help="results.jsonl files (merged)")
    _add_deploy_args(p, required=True)
    p.add_argument("--task", help="the task to plan for, when the records hold several")
    p.add_argument("--min-accuracy", type=float, help="the lowest acceptable metric, a fraction (0.9 = 90%%)")
    p.add_argument("--max-latency-ms", type=float, help="the latency p50 budget")
    p.add_argument("--max-energy-j", type=float, help="the device energy budget per image")
    p.add_argument("--objective", choices=["latency", "energy", "accuracy"],
                   help="rank by (default: latency with --min-accuracy, else accuracy)")
    p.add_argument("--no-local", action="store_true", help="leave local computing out (the whole model does not "
                                                          "fit the device)")
    p.add_argument("--top", type=int, default=5, help="how many ranked configurations to print")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("list", help="what the registries hold")
    p.add_argument("what", choices=["methods", "backbones", "datasets", "codecs", "tasks"])
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except (SplitbenchError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
