"""The report's HTML page, opened in a real headless Chromium: every leaderboard row shows what
the JSON export holds, clicking a header sorts by it, figures are embedded, and the page logs
no console error."""

import base64
import json
import re
import shutil

import pytest

from lmbench.store import results

from conftest import fake_run_row, lmbench_cli

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra) is not installed")
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no Chromium with chromedriver "
                                   "(Debian: apt-get install chromium chromium-driver)")

DATASET_PARAMS = json.dumps({"seed": 0, "n_train": 10, "n_val": 2, "n_test": 4, "height": 60, "width": 50})
MRE = {("ddpm", 1): [3.1, 2.9, 3.4], ("ddpm", 5): [2.2, 2.0, 2.1],
       ("imagenet", 1): [4.0, 4.6, 4.2], ("imagenet", 5): [2.6, 2.8, 2.7]}


def write_runs(folder):
    """Three seeds of two methods on ISBI 2015 (so the paper's rows join them), one flagged."""
    for (pretrainer, labels), values in MRE.items():
        for seed, mre in enumerate(values):
            flagged = pretrainer == "imagenet" and labels == 1 and seed == 0
            row = fake_run_row(f"{pretrainer}-{labels}-{seed}", pretrainer, labels, seed, matrix="html",
                               dataset="isbi2015", dataset_label="isbi2015", dataset_params=DATASET_PARAMS,
                               thresholds="[2.0, 4.0]",
                               health="pre-training loss never left chance" if flagged else "ok")
            errors = {(i, j): mre * (0.8 + 0.2 * ((i + j) % 3)) for i in range(151, 157) for j in range(3)}  # mean: mre
            predictions = [{"split": "test", "image_id": f"{i:03d}", "landmark_index": j, "landmark": f"L{j}",
                            "x": 20.0 + j, "y": 30.0, "x_true": 20.0 + j + e, "y_true": 30.0, "error": e, "unit": "mm"}
                           for (i, j), e in errors.items()]
            sdr = {t: 100 * sum(e <= t for e in errors.values()) / len(errors) for t in (2, 4)}
            metrics = [{"split": "test", "eval_mode": "native", "metric": m, "landmark": "all", "value": v,
                        "unit": "mm"} for m, v in (("mre", mre), ("sdr@2", sdr[2]), ("sdr@4", sdr[4]))]
            metrics += [{"split": "test", "eval_mode": "native", "metric": "mre", "landmark": f"L{j}",
                         "value": sum(e for (_, k), e in errors.items() if k == j) / 6, "unit": "mm"} for j in range(3)]
            results.write_run(folder, row, metrics, predictions)


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def first_number(text):
    return float(re.match(r"[-\d.]+", text).group(0))


@needs_browser
def test_the_page_shows_the_json_exports_values_and_sorts(tmp_path, browser):
    from selenium.webdriver.common.by import By

    folder = tmp_path / "results"
    write_runs(folder)
    out = tmp_path / "report"
    shown = lmbench_cli("report", str(folder), "--out", str(out))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    exported = lmbench_cli("leaderboard", str(folder), "--format", "json", "--eval-mode", "native",
                           "--reference", "paper")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    (board,) = json.loads(exported.stdout)
    page = out / "index.html"
    assert "http://" not in page.read_text().replace("http://www.w3.org", "")  # nothing fetched from a network

    browser.get(page.as_uri())
    (table,) = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == len(board["rows"]) and any(r["source"] != "lmbench" for r in board["rows"])
    for row in rows:
        record = board["rows"][int(row.get_attribute("data-record"))]
        cell = {td.get_attribute("data-column"): td for td in row.find_elements(By.TAG_NAME, "td")}
        assert int(cell["labels"].text) == record["labels"] and cell["source"].text == record["source"]
        for metric in board["metrics"]:
            if record[metric] is None:
                continue
            assert first_number(cell[metric].text) == pytest.approx(record[metric], abs=0.005), (metric, record)
            if record.get(f"{metric}_ci_low") is not None:  # the interval, as the export holds it
                assert f"[{record[f'{metric}_ci_low']:.2f}, {record[f'{metric}_ci_high']:.2f}]" in cell[metric].text
            assert ("bold" in cell[metric].get_attribute("class")) == bool(record[f"{metric}_bold"])
    flagged = [row for row in rows if "flagged" in row.get_attribute("class")]
    assert len(flagged) == 1 and "†1" in flagged[0].text
    assert "pre-training loss never left chance" in browser.find_element(By.CSS_SELECTOR, ".footnote").text

    mre_header = table.find_element(By.CSS_SELECTOR, "th[data-column='mre']")
    mre_header.click()
    values = [float(td.get_attribute("data-sort")) for td in table.find_elements(By.CSS_SELECTOR, "tbody td[data-column='mre']")]
    assert values == sorted(values) and values != [float(board["rows"][i]["mre"]) for i in range(len(values))]
    mre_header.click()
    descending = [float(td.get_attribute("data-sort")) for td in table.find_elements(By.CSS_SELECTOR, "tbody td[data-column='mre']")]
    assert descending == sorted(values, reverse=True)
    assert mre_header.get_attribute("aria-sort") == "descending"

    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) == 3 and all(img.get_attribute("src").startswith("data:image/png;base64,") for img in images)
    assert all(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images)  # they decode
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    browser.save_screenshot(str(tmp_path / "report.png"))


HOSTILE = "<script>document.title+='|XSS'</script>"


def write_hostile_runs(folder, secret):
    """Two runs whose labels and landmark names carry script and a Markdown image of a local file."""
    for seed, mre in enumerate([3.0, 4.0]):
        row = fake_run_row(f"hostile-{seed}", "ddpm", 1, seed, dataset_label=f"isbi{HOSTILE}",
                           pretrainer_label=f"ddpm {HOSTILE}", head_label=f"![x]({secret})", thresholds="[2.0]")
        predictions = [{"split": "test", "image_id": "151", "landmark_index": 0, "landmark": f"L{HOSTILE}",
                        "x": 1.0, "y": 1.0, "x_true": 1.0 + mre, "y_true": 1.0, "error": mre, "unit": "mm"}]
        metrics = [{"split": "test", "eval_mode": "native", "metric": "mre", "landmark": landmark, "value": mre,
                    "unit": "mm"} for landmark in ("all", f"L{HOSTILE}")]
        results.write_run(folder, row, metrics, predictions)


def test_labels_from_a_results_folder_reach_the_report_as_text(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG private")
    write_hostile_runs(tmp_path / "results", secret)
    shown = lmbench_cli("report", str(tmp_path / "results"), "--out", str(tmp_path / "report"))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<script>document.title" not in page and "&lt;script&gt;document.title" in page
    assert f'src="{secret}"' not in page
    assert base64.b64encode(secret.read_bytes()).decode() not in page  # never embedded
    index = (tmp_path / "report" / "index.md").read_text()
    assert "<script>" not in index and "![x](" not in index


@needs_browser
def test_a_report_of_hostile_labels_runs_no_script_in_chromium(tmp_path, browser):
    write_hostile_runs(tmp_path / "results", tmp_path / "secret.png")
    shown = lmbench_cli("report", str(tmp_path / "results"), "--out", str(tmp_path / "report"))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    browser.get((tmp_path / "report" / "index.html").as_uri())
    assert "XSS" not in browser.title
    assert "document.title" in browser.find_element("tag name", "body").text  # shown as text
    assert all(img.get_attribute("src").startswith("data:image/png;base64,")
               for img in browser.find_elements("tag name", "img"))
    browser.save_screenshot(str(tmp_path / "hostile.png"))
