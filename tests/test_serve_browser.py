"""End to end in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``,
installed in CI by ``scripts/ci-system-deps.sh``) opens the page of a real uvicorn server on
loopback, a review is typed, the button clicked, and the label shown must be the API's."""

from __future__ import annotations

import shutil
import tempfile

import pytest

pytest.importorskip("fastapi")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401
except ImportError:
    selenium = None
if selenium is None or CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "needs selenium (pip, dev extra) and the Debian packages chromium + chromium-driver "
        "(scripts/ci-system-deps.sh installs them)",
        allow_module_level=True,
    )

import httpx  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from conftest import tiny_run_config  # noqa: E402
from loralab import train  # noqa: E402
from loralab.serving.server import create_app, load_predictor, serve_in_thread  # noqa: E402

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
]
REVIEWS = ["a charming , funny and smart film", "boring , dull and clumsy . the plot is awful"]


@pytest.fixture(scope="module")
def server_url(tiny_models, tiny_data, tmp_path_factory):
    run = train(
        tiny_run_config(tiny_models["gpt2"], tiny_data, tmp_path_factory.mktemp("browser") / "run"), command=[]
    ).run_dir
    predictor, info = load_predictor(run, device="cpu")
    with serve_in_thread(create_app(predictor, info=info)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.TemporaryDirectory(prefix="loralab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile.name}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def test_typing_reviews_and_clicking_shows_the_predicted_labels(browser, server_url):
    expected = httpx.post(f"{server_url}/predict", json={"texts": REVIEWS}).json()["predictions"]
    browser.get(server_url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(EC.text_to_be_present_in_element((By.ID, "model"), "labels: negative, positive"))
    box = browser.find_element(By.ID, "texts")
    box.send_keys(REVIEWS[0])
    box.send_keys("\n\n")  # a blank line between reviews is ignored
    box.send_keys(REVIEWS[1])
    browser.find_element(By.ID, "classify").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) == len(REVIEWS))
    rows = browser.find_elements(By.CSS_SELECTOR, "#results li.result")
    for row, review, p in zip(rows, REVIEWS, expected, strict=True):
        assert row.find_element(By.CSS_SELECTOR, ".label").text == p["label_name"]
        assert row.find_element(By.CSS_SELECTOR, ".text").text == review
        assert row.find_element(By.CSS_SELECTOR, ".confidence").text == f"{100 * p['confidence']:.1f}%"
        bar = row.find_element(By.CSS_SELECTOR, ".bar")
        assert float(bar.get_attribute("aria-valuenow")) == pytest.approx(100 * p["confidence"], abs=0.05)
        fill = row.find_element(By.CSS_SELECTOR, ".fill")
        assert fill.size["width"] > 0
    assert browser.find_element(By.ID, "error").is_displayed() is False
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []  # no script errors, no blocked (external) resources


def test_an_empty_box_shows_a_message_instead_of_calling_the_api(browser, server_url):
    browser.get(server_url + "/")
    browser.find_element(By.ID, "classify").click()
    error = WebDriverWait(browser, 10).until(EC.visibility_of_element_located((By.ID, "error")))
    assert "at least one review" in error.text
    assert browser.find_elements(By.CSS_SELECTOR, "#results li") == []


def test_a_limit_error_from_the_server_is_shown(browser, server_url):
    browser.get(server_url + "/")
    box = browser.find_element(By.ID, "texts")
    browser.execute_script("arguments[0].value = arguments[1];", box, "x" * 2001)
    browser.find_element(By.ID, "classify").click()
    error = WebDriverWait(browser, 10).until(EC.visibility_of_element_located((By.ID, "error")))
    assert "too long" in error.text and "HTTP 413" in error.text


@pytest.fixture(scope="module")
def adapters_url(tiny_models, tiny_data, tmp_path_factory):
    from loralab.serving.server import load_adapters

    root = tmp_path_factory.mktemp("browser-adapters")
    runs = [
        train(
            tiny_run_config(tiny_models["bert"], tiny_data, root / name, rank=rank, lr=0.02, seed=seed), command=[]
        ).run_dir
        for name, rank, seed in (("first", 2, 1), ("second", 8, 2))
    ]
    predictor, info = load_adapters(runs, device="cpu")
    with serve_in_thread(create_app(predictor, info=info)) as url:
        yield url


def test_picking_an_adapter_or_all_of_them_shows_their_answers(browser, adapters_url):
    from selenium.webdriver.support.ui import Select

    api = {
        name: httpx.post(f"{adapters_url}/predict", json={"texts": REVIEWS, "adapter": name}).json()["predictions"]
        for name in ("first", "second")
    }
    listed = httpx.get(f"{adapters_url}/adapters").json()["adapters"]
    browser.get_log("browser")  # drop what earlier tests logged (the 413 one shows on purpose)
    browser.get(adapters_url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(EC.text_to_be_present_in_element((By.ID, "model"), "2 adapters over"))
    picker = Select(browser.find_element(By.ID, "adapter"))
    assert [o.text.split(" · ")[0] for o in picker.options] == ["first", "second", "all 2 adapters"]
    assert picker.first_selected_option.get_attribute("value") == "first"  # the default adapter
    browser.find_element(By.ID, "texts").send_keys("\n".join(REVIEWS))
    picker.select_by_value("second")
    browser.find_element(By.ID, "classify").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.result")) == len(REVIEWS))
    for row, p in zip(browser.find_elements(By.CSS_SELECTOR, "#results li.result"), api["second"], strict=True):
        assert row.get_attribute("data-adapter") == "second"
        assert row.find_element(By.CSS_SELECTOR, ".confidence").text == f"{100 * p['confidence']:.1f}%"
    picker.select_by_index(2)  # all adapters
    browser.find_element(By.ID, "classify").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li.answer")) == 2 * len(REVIEWS))
    groups = browser.find_elements(By.CSS_SELECTOR, "#results li.result.group")
    for k, group in enumerate(groups):
        answers = group.find_elements(By.CSS_SELECTOR, "li.answer")
        assert [a.find_element(By.CSS_SELECTOR, ".adapter-name").text for a in answers] == ["first", "second"]
        for a, meta in zip(answers, listed, strict=True):
            p = api[meta["name"]][k]
            assert a.find_element(By.CSS_SELECTOR, ".label").text == p["label_name"]
            assert a.find_element(By.CSS_SELECTOR, ".confidence").text == f"{100 * p['confidence']:.1f}%"
            assert a.find_element(By.CSS_SELECTOR, ".accuracy").text == f"val {100 * meta['validation_accuracy']:.1f}%"
            assert a.find_element(By.CSS_SELECTOR, ".fill").size["width"] > 0
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
