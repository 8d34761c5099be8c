"""Leaderboard aggregation, export formats, the paper's reference numbers and the report."""

import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from lmbench.reporting.figures import write_report
from lmbench.reporting.formats import to_csv, to_json, to_latex, to_markdown
from lmbench.reporting.leaderboard import build_boards
from lmbench.reporting.reference import load_reference
from lmbench.store import results

from conftest import SHARED_DATA, fake_run_row, lmbench_cli

DATASET_PARAMS = json.dumps({"seed": 0, "n_train": 10, "n_val": 2, "n_test": 4, "height": 60, "width": 50,
                             "spacing": 0.8, "noise": 0.03, "n_landmarks": 11})
# (pretrainer, labels) -> MRE per seed
MRE = {("ddpm", 1): [10.0, 12.0, 14.0], ("ddpm", 5): [3.0, 3.5, 4.0],
       ("scratch", 1): [20.0, 22.0, 30.0], ("scratch", 5): [2.0, 2.5, 3.0]}


def write_fake_run(folder, pretrainer, labels, seed, mre, status="ok", key=None):
    key = key or f"{pretrainer}-{labels}-{seed}-{status}"
    row = fake_run_row(key, pretrainer, labels, seed, status=status, error=None if status == "ok" else "out of luck",
                       dataset_params=DATASET_PARAMS)
    metrics = [{"split": "test", "eval_mode": mode, "metric": m, "landmark": "all", "value": v, "unit": "mm"}
               for mode, shift in (("native", 0.0), ("paper", 1.0))
               for m, v in (("mre", mre + shift), ("sdr@2.5", 100 / mre), ("sdr@5", 200 / mre))] if status == "ok" else []
    predictions = [{"split": "test", "image_id": f"{i:04d}", "landmark_index": j, "landmark": f"L{j}",
                    "x": 20.0 + j, "y": 30.0 - j, "x_true": 21.0 + j, "y_true": 30.0, "error": 1.0, "unit": "mm"}
                   for i in (12, 13) for j in range(11)] if status == "ok" else []
    results.write_run(folder, row, metrics, predictions)


@pytest.fixture
def fake_results(tmp_path):
    folder = tmp_path / "fake"
    for (pretrainer, labels), values in MRE.items():
        for seed, mre in enumerate(values):
            write_fake_run(folder, pretrainer, labels, seed, mre)
    write_fake_run(folder, "dino", 1, 0, 0.0, status="failed")
    write_fake_run(folder, "dino", 5, 0, 0.0, status="skipped")
    copy = tmp_path / "copy"  # the same runs again in another folder: counted once
    write_fake_run(copy, "ddpm", 1, 0, MRE[("ddpm", 1)][0])
    return [folder, copy]


def test_seeds_are_aggregated_once_each_and_the_best_is_marked(fake_results):
    (board,) = build_boards(fake_results)
    rows = {(r.method[0], r.labels): r for r in board.rows}
    for (pretrainer, labels), values in MRE.items():
        row = rows[(pretrainer, labels)]
        assert row.seeds == 3
        assert row.values["mre"][0] == pytest.approx(np.mean(values))
        assert row.values["mre"][1] == pytest.approx(np.std(values))
    assert board.best(1, "mre") == pytest.approx(12.0) and board.best(5, "mre") == pytest.approx(2.5)
    assert board.best(1, "sdr@5") == pytest.approx(np.mean([200 / v for v in MRE[("ddpm", 1)]]))
    assert rows[("ddpm", 1)].rank == rows[("ddpm", 5)].rank == 1.5  # first with 1 label, second with 5
    assert dict(board.not_ok) == {"failed": 1, "skipped": 1}
    (paper,) = build_boards(fake_results, eval_mode="paper")
    assert {(r.method[0], r.labels): r for r in paper.rows}[("ddpm", 1)].values["mre"][0] == pytest.approx(13.0)


def test_filters_and_metric_columns(fake_results):
    (board,) = build_boards(fake_results, filters={"pretrainer": ["ddpm"], "labels": [5]}, metrics=["mre", "sdr@5"])
    assert [(r.method[0], r.labels) for r in board.rows] == [("ddpm", 5)]
    assert board.metrics == ["mre", "sdr@5"]
    assert build_boards(fake_results, filters={"dataset": ["chest"]}) == []


def test_every_format_parses_back(fake_results):
    boards = build_boards(fake_results)
    markdown = to_markdown(boards)
    assert "| **12.00 ± 1.63** |" in markdown and "Not shown: 1 failed, 1 skipped run(s)" in markdown
    latex = to_latex(boards)
    for environment in set(re.findall(r"\\begin\{(\w+)\}", latex)):
        assert latex.count(f"\\begin{{{environment}}}") == latex.count(f"\\end{{{environment}}}")
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert r"\textbf{12.00 $\pm$ 1.63}" in latex
    header = latex.split(r"\toprule")[1].split(r"\\")[0]
    assert header.count("&") == latex.split(r"\midrule")[1].split(r"\\")[0].count("&")  # as many cells as columns
    table = list(csv.DictReader(io.StringIO(to_csv(boards))))
    assert len(table) == 4
    ddpm = next(r for r in table if r["pre_training"] == "ddpm" and r["labels"] == "1")
    assert float(ddpm["mre"]) == pytest.approx(12.0) and int(ddpm["seeds"]) == 3
    (parsed,) = json.loads(to_json(boards))
    assert parsed["not_shown"] == {"failed": 1, "skipped": 1}
    assert {(r["pre_training"], r["labels"]): r["mre"] for r in parsed["rows"]}[("scratch", 5)] == pytest.approx(2.5)


def test_the_cli_filters_and_exports(fake_results):
    shown = lmbench_cli("leaderboard", *map(str, fake_results), "--format", "csv", "--head", "gaussian", "--labels", "1")
    assert shown.returncode == 0, shown.stderr
    assert len(list(csv.DictReader(io.StringIO(shown.stdout)))) == 2


PAPER_CELLS = [  # (table, dataset, method, labels, metric, value, std) typed from the paper's text
    ("Table 1", "chest", "ImageNet", 1, "mre", 143.67, 0.27),
    ("Table 1", "chest", "Our method", 1, "sdr@9", 64.63, 0.00),
    ("Table 1", "chest", "Our method with [35]", 50, "mre", 2.69, 0.00),
    ("Table 1", "chest", "DINO", 50, "sdr@9", 82.32, 3.05),
    ("Table 2", "isbi2015", "MoCoV3", 1, "mre", 43.49, 1.21),
    ("Table 2", "isbi2015", "Our method", 25, "mre", 2.84, 0.00),
    ("Table 2", "isbi2015", "SimCLRv2", 1, "mre", 100.68, 12.18),
    ("Table 2", "isbi2015", "ImageNet", 50, "sdr@2.5", 60.74, 3.48),
    ("Table 3", "hand", "Our method", 1, "mre", 28.75, 0.00),
    ("Table 3", "hand", "DINO", 1, "mre", 97.31, 0.09),
    ("Table 3", "hand", "Our method", 50, "sdr@4", 96.35, 0.51),
    ("Table 4", "isbi2015", "YOLO+", 10, "sdr@4", 53.49, None),
    ("Table 4", "hand", "YOLO+", 1, "mre", 61.36, None),
    ("Table 5", "isbi2015", "Our method", 1, "mre", 9.56, 0.28),
    ("Table 5", "chest", "Our method", 50, "sdr@9", 92.68, 0.00),
]


def test_the_reference_file_holds_the_papers_tables():
    rows = load_reference("paper")
    assert len(rows) == 487  # tables 1-3: 6 methods x 5 label counts x (1 + SDR thresholds); 4 and 5 likewise
    index = {(r["source"], r["dataset"], r["method"], r["labels"], r["metric"]): r for r in rows}
    for source, dataset, method, labels, metric, value, std in PAPER_CELLS:
        row = index[(source, dataset, method, labels, metric)]
        assert (row["value"], row["std"], row["eval_mode"]) == (value, std, "paper"), (source, method, labels, metric)
    paper = SHARED_DATA.parent / "paper" / "divia2025-ddpm-fewshot-landmarks.md"
    if paper.exists():  # and it is exactly what the builder reads from the paper's text
        import importlib.util

        from conftest import ROOT
        spec = importlib.util.spec_from_file_location("make", ROOT / "results" / "reference" / "make_paper_reference.py")
        make = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(make)
        parsed = make.parse(paper.read_text())
        assert [{k: r[k] for k in parsed[0]} for r in rows] == parsed


def test_the_reference_sits_beside_our_rows(fake_results):
    reference = [{**r, "dataset": "synthetic"} for r in load_reference("paper") if r["source"] == "Table 3"]
    (board,) = build_boards(fake_results, reference=reference, metrics=["mre"])
    sources = {r.source for r in board.rows}
    assert sources == {"lmbench", "paper Table 3"} and board.eval_mode == "native"
    ours = [r for r in board.rows if r.source == "lmbench"]
    assert board.best(1, "mre") == min(r.values["mre"][0] for r in ours if r.labels == 1)  # ours only


def test_the_report_writes_figures_and_an_index_linking_each(fake_results, tmp_path):
    out = tmp_path / "report"
    figures = write_report(fake_results, out)
    assert {f.name for f in figures} == {"synthetic-mre.png", "synthetic-sdr.png", "synthetic-overlays-1.png"}
    index = (out / "index.md").read_text()
    sizes = {"synthetic-mre.png": (700, 500), "synthetic-sdr.png": (700, 440),
             "synthetic-overlays-1.png": (2 * 240, 2 * 260)}  # 2 methods x 2 test images
    for figure in figures:
        assert f"]({figure.name})" in index
        with Image.open(figure) as image:  # the figure's size, cropped or grown to what it draws
            assert np.allclose(image.size, sizes[figure.name], rtol=0.15), (figure.name, image.size)
            assert np.asarray(image.convert("L")).std() > 5  # something is drawn
    assert "| Labels |" in index  # the tables too


def test_the_sweep_reads_the_validation_split_never_the_test_split(tmp_path):
    from lmbench.reporting.figures import sweep_points

    folder = tmp_path / "sweep"
    for iterations, val, test in ((4000, 5.0, 1.0), (8000, 3.0, 9.0)):
        for seed in (0, 1):
            key = f"ddpm-{iterations}-{seed}"
            write_fake_run(folder, "ddpm", 10, seed, test + seed, key=key)
            run = results.read_runs([folder])
            (row,) = [r for r in run if r["run_key"] == key]
            row = {k: v for k, v in row.items() if k != "_file"}
            row["pretrainer_params"] = json.dumps({"iterations": iterations})
            metrics = [{"split": split, "eval_mode": "native", "metric": "mre", "landmark": "all", "value": v + seed,
                        "unit": "mm"} for split, v in (("val", val), ("test", test))]
            results.write_run(folder, row, metrics, [])
    runs = [r for r in results.read_runs([folder])]
    assert sweep_points(runs, "native") == {("ddpm / gaussian", 10): [(4000, 5.5), (8000, 3.5)]}


def test_an_installed_wheel_carries_the_papers_numbers(tmp_path):
    """Built and installed as a user gets it (not editable), read from outside the checkout."""
    import subprocess
    import sys

    from conftest import ROOT

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("lmbench-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    code = ("import lmbench.reporting.reference as r; print(r.__file__); print(len(r.load_reference('paper')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site")})
    assert out.returncode == 0, out.stderr
    module, count = out.stdout.split()
    assert module.startswith(str(tmp_path / "site")) and int(count) == 487


def test_a_metric_the_runs_do_not_have_is_an_error_that_lists_theirs(fake_results):
    from lmbench.core.errors import LmbenchError

    with pytest.raises(LmbenchError, match=r"'sdr2' is not a metric of synthetic's runs \(did you mean 'sdr@2.5'\?\)"):
        build_boards(fake_results, metrics=["mre", "sdr2"])
    with pytest.raises(LmbenchError, match="'failure@40' is not a metric.*mre, sdr@2.5, sdr@5, coverage"):
        build_boards(fake_results, metrics=["failure@40"])


def test_selection_and_seed_filter_the_rows(fake_results):
    (board,) = build_boards(fake_results, filters={"selection": ["first"], "seed": [0]})
    assert {r.seeds for r in board.rows} == {1}
    assert build_boards(fake_results, filters={"selection": ["representative"]}) == []


def test_every_figure_keeps_its_legend_and_title_inside_the_saved_canvas(tmp_path):
    from PIL import Image

    folder = tmp_path / "long"
    names = ["a pre-training with a long descriptive label", "another one, longer still, with more words",
             "a third method whose name would not fit", "and a fourth"]
    for i, name in enumerate(names):
        for labels in (1, 5):
            write_fake_run(folder, name, labels, 0, 3.0 + i, key=f"long-{i}-{labels}")
    figures = write_report([folder], tmp_path / "report")
    assert len(figures) >= 3
    for figure in figures:
        pixels = np.asarray(Image.open(figure).convert("L"))
        border = np.concatenate([pixels[:2].ravel(), pixels[-2:].ravel(), pixels[:, :2].ravel(), pixels[:, -2:].ravel()])
        assert border.min() > 250, f"{figure.name}: something is drawn at the edge of the canvas, cut by it"


def test_a_table_of_generated_images_says_it_checks_the_machinery_only(fake_results, tmp_path):
    from lmbench.reporting.leaderboard import footnote

    (board,) = build_boards(fake_results)
    assert board.generated and "says nothing about which pre-training is better" in footnote(board)
    results.write_run(tmp_path / "real", fake_run_row("r" * 16, "ddpm", 1, 0, dataset="isbi2015",
                                                       dataset_label="isbi2015"), [], [])
    (real,) = build_boards([tmp_path / "real"])
    assert not real.generated and "Generated images" not in footnote(real)


def test_the_overlays_show_a_column_for_each_selection_of_a_method(fake_results, tmp_path):
    from PIL import Image

    row = fake_run_row("repr" * 4, "ddpm", 1, 0, dataset_params=DATASET_PARAMS, selection="representative")
    predictions = [{"split": "test", "image_id": f"{i:04d}", "landmark_index": j, "landmark": f"L{j}",
                    "x": 20.0 + j, "y": 30.0 - j, "x_true": 21.0 + j, "y_true": 30.0, "error": 1.0, "unit": "mm"}
                   for i in (12, 13) for j in range(11)]
    metrics = [{"split": "test", "eval_mode": "native", "metric": "mre", "landmark": "all", "value": 9.0, "unit": "mm"}]
    results.write_run(fake_results[0], row, metrics, predictions)
    write_report(fake_results, tmp_path / "report")
    with Image.open(tmp_path / "report" / "synthetic-overlays-1.png") as image:  # ddpm first, ddpm representative, scratch
        assert np.isclose(image.size[0], 3 * 240, rtol=0.15), image.size
