"""The ``lmbench`` command line."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lmbench.core.errors import LmbenchError
from lmbench.core.plugins import registry
from lmbench.store import layout

app = typer.Typer(help="Benchmark pre-training for few-shot anatomical landmark detection.", no_args_is_help=True)
# Tables stay readable when piped: rich would otherwise wrap them at 80 columns.
console = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=160)
MatrixOption = Annotated[Path, typer.Option("--matrix", "-m", help="Matrix TOML file.")]
DataRootOption = Annotated[
    Optional[Path], typer.Option(help="Folder holding the datasets: sets $LMBENCH_DATA for the matrix's data roots.")
]


def _load(matrix: Path, data_root: Path | None):
    from lmbench.config.matrix import load_matrix

    if data_root is not None:
        os.environ["LMBENCH_DATA"] = str(data_root.expanduser().resolve())
    return load_matrix(matrix)


class EvalMode(str, Enum):
    native = "native"
    paper = "paper"


class Split(str, Enum):
    test = "test"
    val = "val"


class Spread(str, Enum):
    std = "std"
    interval = "interval"
    half_width = "half-width"


class RerunChoice(str, Enum):
    failed = "failed"
    all = "all"


@app.command()
def plugins(check: Annotated[bool, typer.Option(help="Import every component to check it loads.")] = False):
    """List installed plugins and the components they register."""
    reg = registry()
    table = Table(title="lmbench plugins")
    for column in ("name", "kind", "plugin", "package", "version", "status"):
        table.add_column(column)
    for (kind, name), r in sorted(reg.components.items(), key=lambda item: (item[0][0], item[0][1])):
        status = "[green]ok[/green]"
        if check:
            try:
                reg.get(kind, name)
            except LmbenchError as exc:
                status = f"[red]broken: {escape(str(exc))}[/red]"
        table.add_row(*map(escape, (name, kind, r.plugin.name, r.plugin.package, r.plugin.version)), status)
    for plugin in reg.plugins:
        if plugin.error:
            table.add_row("-", "-", *map(escape, (plugin.name, plugin.package, plugin.version)),
                          f"[red]broken: {escape(str(plugin.error))}[/red]")
    console.print(table)


@app.command()
def validate(matrix: MatrixOption, data_root: DataRootOption = None,
             params: Annotated[bool, typer.Option("--params", help="Also show each component's resolved params (profile defaults applied) and code version.")] = False):
    """Expand a matrix and show its runs and what was pruned, without running anything."""
    m = _load(matrix, data_root)
    if params:
        from lmbench.core.keys import canonical_json

        resolved = Table(title=escape(f"{m.name}: resolved params ({m.profile} profile)"))
        for column in ("kind", "label", "plugin", "code", "params"):
            resolved.add_column(column, overflow="fold")
        seen = {}
        for run in m.runs + [run for run, _ in m.pruned]:
            for spec in (run.dataset, run.pretrainer, run.backbone, run.head, run.selection):
                seen.setdefault((spec.kind, spec.label), spec)
        for (kind, label), spec in seen.items():
            resolved.add_row(*map(escape, (kind, label, spec.name, spec.code, canonical_json(spec.params))))
        finetunes = {f"{run.dataset.label} x {run.backbone.label}": run.finetune for run in m.runs}
        for group, settings in finetunes.items():  # what the shared engine will use, all sources applied
            resolved.add_row("finetune", escape(group), "", "", escape(canonical_json(settings)))
        console.print(resolved)
    table = Table(title=escape(f"{m.name}: {len(m.runs)} runs ({m.profile} profile) -> {m.results_dir}"))
    for column in ("run_key", "dataset", "pretrainer", "backbone", "head", "labels", "seed", "selection"):
        table.add_column(column)
    for run in m.runs:
        table.add_row(*map(escape, (run.run_key, run.dataset.label, run.pretrainer.label, run.backbone.label,
                                    run.head.label, str(run.labels), str(run.seed), run.selection.label)))
    console.print(table)
    if m.pruned:
        pruned = Table(title=f"{len(m.pruned)} pruned combinations")
        for column in ("dataset", "pretrainer", "backbone", "head", "labels", "seed", "selection", "why"):
            pruned.add_column(column)
        for run, why in m.pruned:
            pruned.add_row(*map(escape, (run.dataset.label, run.pretrainer.label, run.backbone.label,
                                         run.head.label, str(run.labels), str(run.seed), run.selection.label, why)))
        console.print(pruned)
    from lmbench.config.matrix import labels_beyond_data

    beyond, uncounted = labels_beyond_data(m)
    for line in uncounted:
        console.print(escape(line), soft_wrap=True)
    if beyond:
        raise LmbenchError(f"{matrix}: {len(beyond)} runs ask for more labels than there are training images: "
                           f"{'; '.join(beyond[:3])}{'; ...' if len(beyond) > 3 else ''}")


@app.command()
def run(
    matrix: MatrixOption,
    data_root: DataRootOption = None,
    rerun: Annotated[Optional[RerunChoice], typer.Option(help="Also rerun finished runs: failed (and skipped) or all.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
    executor: Annotated[Optional[str], typer.Option(help="Where to run: local, pool, submitit or a plugin's (default: the matrix's [executor], else local).")] = None,
    nproc: Annotated[int, typer.Option(min=1, help="Processes per pre-training (data-parallel: one GPU each, or CPU processes with gloo).")] = 1,
):
    """Run every cell of a matrix not already in its results folder."""
    from lmbench.run.schedule import run_matrix

    m = _load(matrix, data_root)
    summary = run_matrix(m, rerun.value if rerun else None, console=console, quiet=quiet, executor=executor,
                         nproc=nproc)
    busy = f", {summary.busy} running elsewhere" if summary.busy else ""
    console.print(
        f"[bold]{escape(m.name)}[/bold]: {summary.ok} ok, {summary.failed} failed, {summary.skipped} skipped, "
        f"{summary.already_done} already done{busy}, in {summary.seconds:.1f} s. Results: {escape(str(m.results_dir))}",
        soft_wrap=True,
    )
    for title, error in summary.failures:
        console.print(f"  [red]failed[/red] {escape(title)}: {escape(error)}", soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def status(matrix: MatrixOption, data_root: DataRootOption = None):
    """How far a matrix is: finished, failed, skipped, running (here or on other machines), pending."""
    from lmbench.store import results
    from lmbench.store.locks import is_locked

    m = _load(matrix, data_root)
    recorded = {row["run_key"]: row for row in results.read_runs([m.results_dir])} if m.results_dir.exists() else {}
    counts = {"ok": 0, "failed": 0, "skipped": 0, "running": 0, "pending": 0}
    reasons = []
    for spec in m.runs:
        row = recorded.get(spec.run_key)
        if is_locked(layout.claim_file(m.results_dir, spec.training_key)):
            counts["running"] += 1
        elif row is None:
            counts["pending"] += 1
        else:
            counts[row["status"]] += 1
            if row["status"] != "ok":
                reasons.append((row["status"], spec.title, row["error"]))
    console.print(f"[bold]{escape(m.name)}[/bold]: {len(m.runs)} runs: " + ", ".join(
        f"{n} {'finished' if k == 'ok' else k}" for k, n in counts.items()))
    seconds = [row["wall_time_s"] for row in recorded.values() if row["status"] == "ok" and row.get("wall_time_s")]
    left = counts["pending"] + counts["running"]
    if seconds and left:  # runs differ (pre-training is cached, fine-tuning is not): a rough figure
        mean = sum(seconds) / len(seconds)
        console.print(f"  about {left * mean / 60:.0f} min of run time left ({left} runs at the finished runs' mean "
                      f"of {mean:.0f} s; divide by the workers running at once)")
    for state, title, error in reasons:
        console.print(f"  [red]{state}[/red] {escape(title)}: {escape(error or '')}", soft_wrap=True)


class OutputFormat(str, Enum):
    rich = "rich"
    markdown = "markdown"
    latex = "latex"
    csv = "csv"
    json = "json"


@app.command()
def leaderboard(
    results_dirs: Annotated[Optional[list[Path]], typer.Argument(help="Results folders (default: results).")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option(help="Only these datasets (label or name); repeatable.")] = None,
    pretrainer: Annotated[Optional[list[str]], typer.Option(help="Only these pretrainers; repeatable.")] = None,
    backbone: Annotated[Optional[list[str]], typer.Option(help="Only these backbones; repeatable.")] = None,
    head: Annotated[Optional[list[str]], typer.Option(help="Only these heads; repeatable.")] = None,
    labels: Annotated[Optional[list[int]], typer.Option(help="Only these label counts; repeatable.")] = None,
    matrix: Annotated[Optional[list[str]], typer.Option(help="Only runs of these matrices; repeatable.")] = None,
    selection: Annotated[Optional[list[str]], typer.Option(help="Only runs whose labelled images this selection chose (first, random, representative, ...); repeatable.")] = None,
    seed: Annotated[Optional[list[int]], typer.Option(help="Only these fine-tuning seeds; repeatable.")] = None,
    metrics: Annotated[Optional[str], typer.Option(help="Metric columns, comma-separated, e.g. mre,sdr@2.")] = None,
    eval_mode: Annotated[Optional[EvalMode], typer.Option(help="native: original resolution and true spacing; paper: the published metric code's rules (the default with --reference).")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Published numbers to show beside ours, e.g. 'paper' (results/reference/paper.parquet).")] = None,
    split: Annotated[Split, typer.Option(help="test, or val to choose settings (a checkpoint, say) without reading the test set.")] = Split.test,
    format: Annotated[OutputFormat, typer.Option("--format", help="rich, markdown, latex, csv or json.")] = OutputFormat.rich,
    failures: Annotated[bool, typer.Option(help="Also list failed and skipped runs, and runs whose health verdict found a problem, with their reasons.")] = False,
    ci: Annotated[Spread, typer.Option("--ci", help="After each mean: std over seeds, the bootstrap confidence interval, or its half-width (CSV and JSON always hold the interval).")] = Spread.std,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Level of the confidence intervals.")] = 0.95,
    significance: Annotated[float, typer.Option(min=0.0, max=0.5, help="Level of the paired tests against the best: bold marks the methods not significantly worse; 0 bolds the best mean only.")] = 0.05,
):
    """Tables of mean ± std (or confidence intervals) over seeds, one per dataset, shaped like the paper's."""
    from lmbench.reporting.formats import RENDERERS
    from lmbench.reporting.leaderboard import build_boards, render_rich
    from lmbench.reporting.reference import load_reference
    from lmbench.store import results

    roots = results_dirs or [Path("results")]
    for root in roots:
        if not root.exists():
            raise LmbenchError(f"{root}: no such results folder")
    filters = {"dataset": dataset, "pretrainer": pretrainer, "backbone": backbone, "head": head,
               "labels": labels, "matrix": matrix, "selection": selection, "seed": seed}
    if reference and split is Split.val:
        raise LmbenchError("--reference: the published numbers are test-set numbers; drop --split val")
    mode = (eval_mode or (EvalMode.paper if reference else EvalMode.native)).value
    chosen = [m.strip() for m in metrics.split(",")] if metrics else None
    boards = build_boards(roots, mode, filters, chosen, load_reference(reference) if reference else None,
                          split.value, confidence, significance, ci.value)
    if not boards:
        raise LmbenchError(f"no runs found under {', '.join(map(str, roots))}" + (" matching the filters" if any(filters.values()) else ""))
    if format is OutputFormat.rich:
        for board in boards:
            console.print(render_rich(board))
    else:
        sys.stdout.write(RENDERERS[format.value](boards))
    if failures:
        for run in results.read_runs(roots):
            flagged = run["status"] == "ok" and run.get("health") not in (None, "ok")
            if run["status"] != "ok" or flagged:
                console.print(f"[red]{'flagged' if flagged else run['status']}[/red] {run['run_key']} "
                              f"{escape(run['dataset_label'])} | {escape(run['pretrainer_label'])} | "
                              f"{escape(run['head_label'])} | {run['labels']} labels | seed {run['seed']}: "
                              f"{escape(run['health'] if flagged else run['error'] or '')}", soft_wrap=True)


@app.command()
def report(
    results_dirs: Annotated[list[Path], typer.Argument(help="Results folders.")],
    out: Annotated[Path, typer.Option(help="Folder for the PNG figures, index.md and index.html.")] = Path("report"),
    dataset: Annotated[Optional[list[str]], typer.Option(help="Only these datasets; repeatable.")] = None,
    pretrainer: Annotated[Optional[list[str]], typer.Option(help="Only these pretrainers; repeatable.")] = None,
    head: Annotated[Optional[list[str]], typer.Option(help="Only these heads; repeatable.")] = None,
    eval_mode: Annotated[EvalMode, typer.Option(help="native or paper evaluation.")] = EvalMode.native,
    overlay_labels: Annotated[Optional[int], typer.Option(help="Label count of the prediction overlays (default 10, else the fewest).")] = None,
    reference: Annotated[str, typer.Option(help="Published numbers beside ours in the leaderboards ('none': no reference rows).")] = "paper",
):
    """Figures for a paper (MRE and SDR by labels, the pre-training sweep, prediction overlays), index.md and index.html."""
    from lmbench.reporting.figures import write_report
    from lmbench.reporting.reference import load_reference

    for root in results_dirs:
        if not root.exists():
            raise LmbenchError(f"{root}: no such results folder")
    filters = {"dataset": dataset, "pretrainer": pretrainer, "head": head}
    rows = None if reference == "none" else load_reference(reference)
    figures = write_report(results_dirs, out, eval_mode.value, filters, overlay_labels, rows)
    console.print(f"{len(figures)} figures, {escape(str(out / 'index.md'))} and {escape(str(out / 'index.html'))} "
                  f"(self-contained: open it in a browser)", soft_wrap=True)


@app.command()
def predict(
    results_dirs: Annotated[list[Path], typer.Argument(help="Results folders.")],
    images: Annotated[Path, typer.Option(help="Folder of images to predict (PNG, JPEG, BMP, TIFF, DICOM).")],
    out: Annotated[Path, typer.Option(help="Folder for predictions.csv and labelme/<id>.json.")] = Path("predictions"),
    run: Annotated[Optional[str], typer.Option(help="The run's key (see `lmbench leaderboard --format csv` or runs/*.parquet).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Without --run: the best run (lowest test MRE) for this dataset...")] = None,
    labels: Annotated[Optional[int], typer.Option(help="... at this label count.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda where there is one).")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    skip_unreadable: Annotated[bool, typer.Option(help="Predict the readable images and list the others, instead of stopping at the first.")] = False,
    max_pixels: Annotated[Optional[int], typer.Option(min=1, help="Refuse images larger than this many pixels (default $LMBENCH_MAX_PIXELS, else 100 million).")] = None,
):
    """Put a run's saved detector to use: landmarks for a folder of images, at their original size."""
    import torch
    from rich.progress import Progress

    from lmbench.detector.saved import choose_run, load_detector, predict_folder

    for root in results_dirs:
        if not root.exists():
            raise LmbenchError(f"{root}: no such results folder")
    if not images.is_dir():
        raise LmbenchError(f"{images}: no such image folder")
    chosen, why = choose_run(results_dirs, run, dataset, labels)
    detector = load_detector(chosen)
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    console.print(escape(f"run {chosen['run_key']}: {chosen['dataset_label']} | {chosen['pretrainer_label']} | "
                         f"{chosen['backbone_label']} | {chosen['head_label']} | {chosen['labels']} labels | "
                         f"seed {chosen['seed']}: {why}"), soft_wrap=True)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("predicting", total=None)
        table, labelme, skipped = predict_folder(
            detector, images, out, where, batch_size,
            lambda done, total: progress.update(task, completed=done, total=total), skip_unreadable, max_pixels)
    for reason in skipped:
        console.print(f"  [yellow]skipped[/yellow] {escape(reason)}", soft_wrap=True)
    console.print(escape(f"{table} and {labelme}/ (labelme opens them beside the images)"), soft_wrap=True)


@app.command()
def export(
    results_dirs: Annotated[list[Path], typer.Argument(help="Results folders.")],
    out: Annotated[Path, typer.Option(help="The ONNX file to write.")] = Path("detector.onnx"),
    run: Annotated[Optional[str], typer.Option(help="The run's key.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Without --run: the best run (lowest test MRE) for this dataset...")] = None,
    labels: Annotated[Optional[int], typer.Option(help="... at this label count.")] = None,
):
    """A run's saved detector as ONNX, for onnxruntime without PyTorch (lmbench.deploy.OnnxDetector decodes it)."""
    from lmbench.detector.export import export_onnx
    from lmbench.detector.saved import choose_run, load_detector

    for root in results_dirs:
        if not root.exists():
            raise LmbenchError(f"{root}: no such results folder")
    chosen, why = choose_run(results_dirs, run, dataset, labels)
    with console.status("exporting"):
        export_onnx(load_detector(chosen), out)
    console.print(escape(f"{out}: run {chosen['run_key']} ({chosen['dataset_label']} | {chosen['pretrainer_label']} | "
                         f"{chosen['head_label']} | {chosen['labels']} labels: {why}); run it with "
                         f"lmbench.deploy.OnnxDetector"), soft_wrap=True)


data_app = typer.Typer(help="Fetch and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _parse_value(text: str):
    """A TOML value (number, bool, list, quoted string) or, failing that, the plain string."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@data_app.command("check")
def data_check(
    dataset: Annotated[str, typer.Option(help="Dataset plugin name.")],
    root: Annotated[Optional[str], typer.Option(help="Data root (params.root).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Other params, KEY=VALUE.")] = None,
):
    """Load every sample; print split counts, image sizes, landmark ranges and every problem."""
    from lmbench.core import params as P
    from lmbench.data.check import check_dataset

    cls = registry().get("dataset", dataset)
    values = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise LmbenchError(f"--param {item!r}: expected KEY=VALUE")
        values[key] = _parse_value(value)
    if root is not None:
        values["root"] = root
    built = P.build(cls.Params, values, f"--param for {dataset}")
    if not show_check(check_dataset(dataset, cls(built))):
        raise typer.Exit(1)


def show_check(report) -> bool:
    """Print a ``lmbench data check`` report; whether the dataset is usable."""
    console.print(f"[bold]{escape(report.dataset)}[/bold]: " + ", ".join(f"{n} {s}" for s, n in report.splits.items())
                  + (f", {len(report.errors)} left out or unreadable" if report.errors else ""))
    if report.image_sizes:
        (h0, w0), (h1, w1) = report.image_sizes
        console.print(f"  image sizes (W x H): {w0}x{h0} to {w1}x{h1}")
        lo, hi = report.landmark_range
        console.print(f"  landmarks: x {lo[0]:.1f} to {hi[0]:.1f}, y {lo[1]:.1f} to {hi[1]:.1f} (original pixels)")
    if report.spacing_range:
        console.print(f"  spacing: {report.spacing_range[0]:.4g} to {report.spacing_range[1]:.4g} mm per pixel")
    console.print(f"  metrics in {report.unit}: SDR at {', '.join(f'{t:g}' for t in report.thresholds)} {report.unit}, "
                  f"failure beyond {report.failure_threshold:g} {report.unit}")
    if report.agreement:
        agreement = report.agreement
        worst = sorted(agreement.per_landmark.items(), key=lambda kv: -kv[1])
        console.print(f"  inter-annotator distance ({agreement.unit}) over {agreement.images} images: "
                      f"{agreement.overall:.3g} overall; per landmark, largest first: "
                      + ", ".join(f"{n} {v:.3g}" for n, v in worst), soft_wrap=True)
    for warning in report.warnings:
        console.print(f"  [yellow]warning[/yellow] {escape(warning)}", soft_wrap=True)
    for error in report.errors:
        console.print(f"  [red]error[/red] {escape(error)}", soft_wrap=True)
    if report.failing:
        console.print(f"[red]not usable[/red]: {report.failing} images of the splits fail to load, and a run would stop "
                      f"on the first; fix or remove them (listed above)", soft_wrap=True)
    else:
        console.print("usable" if report.usable else "[red]not usable[/red]: no sample is left")
    return report.usable


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="isbi2015, hand or chest.")],
    to: Annotated[Path, typer.Option(help="The dataset's folder (its params.root).")],
    mirror: Annotated[Optional[list[str]], typer.Option(help="A URL serving the release's files by name, tried first; repeatable.")] = None,
    archive: Annotated[Optional[list[Path]], typer.Option(help="A file downloaded by hand (a licence form), used instead; repeatable.")] = None,
):
    """Download a public dataset (mirrors in order, resumable, sha256-checked), lay it out as its loader reads it, then check it."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from lmbench.core import params as P
    from lmbench.data.check import check_dataset
    from lmbench.data.fetch import RELEASES, fetch

    if name not in RELEASES:
        raise LmbenchError(f"no public release named {name!r}; lmbench fetches {', '.join(RELEASES)}")
    release = RELEASES[name]
    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console,
                  transient=True) as progress:
        tasks: dict[str, int] = {}

        def show(file: str, done: int, total: int | None) -> None:
            if file not in tasks:
                tasks[file] = progress.add_task(file, total=total)
            progress.update(tasks[file], completed=done, total=total)

        missing = fetch(release, to, mirror or [], archive or [], show,
                        lambda line: progress.console.print(escape(line), soft_wrap=True))
    for line in missing:
        console.print(f"[yellow]still missing[/yellow] {escape(line)}", soft_wrap=True)
    cls = registry().get("dataset", release.dataset)
    usable = show_check(check_dataset(release.dataset, cls(P.build(cls.Params, {"root": str(to)}, name))))
    if missing or not usable:
        raise typer.Exit(1)


def add_plugin_commands() -> None:
    """Each plugin's commands, one plugin at a time: one that raises is reported and left out."""
    from lmbench.core.plugins import call_hook

    reg = registry()
    for plugin in reg.plugins:
        if not call_hook(reg, plugin, "lmbench_register_commands", app=app):
            Console(stderr=True).print(f"[yellow]warning:[/yellow] plugin {escape(repr(plugin.name))} "
                                       f"({escape(plugin.package)}) is broken: {escape(str(plugin.error))}",
                                       soft_wrap=True)


def main() -> None:
    try:
        add_plugin_commands()
        app()
    except LmbenchError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except OSError as exc:  # the machine's refusal (a full disk, a permission): what and where, in one line
        console.print(f"[red]error:[/red] {escape(str(exc))}; what was written before is kept", soft_wrap=True)
        raise SystemExit(2) from None
