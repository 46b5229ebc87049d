"""The demo page at / of a real `nmt serve`, in a real headless Chromium driven by Playwright:
typing shows the model's next words, clicking one appends it, the hidden-state view follows the
text, and translating shows the translation and its attention map. A screenshot is kept in
test-artifacts/ (or $NMT_TEST_ARTIFACTS).

Without Chromium these tests skip, saying why, unless NMT_REQUIRE_BROWSER=1 (set by .ci/run, which
installs Chromium): there a missing browser is a failure, not a silent skip.
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import nmt

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("NMT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# Headless, and nothing that phones home: this machine's network is closed.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def _unavailable(reason: str) -> None:
    if os.environ.get("NMT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (NMT_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        _unavailable("Chromium is not installed (Debian/Ubuntu: apt install chromium); .ci/run installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server: str):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{server}/")
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)
    yield page
    page.close()
    assert errors == [], errors


def first_suggestion_is(page, word: str) -> None:
    page.wait_for_function(
        "word => { const b = document.querySelector('#suggestions .suggestion'); "
        "return b && b.dataset.word === word; }",
        arg=word, timeout=60_000,
    )


@pytest.mark.slow
def test_typing_shows_next_words_and_the_hidden_state_and_a_click_appends(page, cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    page.locator("#prompt").press_sequentially("north east", delay=20)  # real key presses
    first_suggestion_is(page, "south")
    words = page.eval_on_selector_all("#suggestions .suggestion", "buttons => buttons.map(b => b.dataset.word)")
    assert words == [w for w, _ in lm.next_words(["north east"], k=8)[0]]
    trace = lm.inspect.hidden_states("north east")
    page.wait_for_function(f"document.querySelectorAll('#trace-table tbody tr').length === {len(trace.tokens)}")
    pieces = page.eval_on_selector_all("#trace-table tbody tr td:nth-child(2)",
                                       "cells => cells.map(c => c.textContent)")
    assert pieces == trace.tokens  # the start symbol, then ▁north ▁east
    assert page.eval_on_selector("#trace-canvas", "c => c.height") > len(trace.tokens) * 10

    page.locator("#suggestions .suggestion").first.click()
    assert page.input_value("#prompt") == "north east south "
    first_suggestion_is(page, "west")  # the suggestions follow the appended word
    page.wait_for_function(f"document.querySelectorAll('#trace-table tbody tr').length === {len(trace.tokens) + 1}")


@pytest.mark.slow
def test_translating_shows_the_translation_and_its_attention_map(page, tiny_run: Path) -> None:
    best = nmt.load(tiny_run).translate(["Where is the station?"], with_attention=True)[0][0]
    page.fill("#source", "Where is the station?")
    page.click("#translate-button")
    page.wait_for_function("() => { const i = document.querySelector('#attention-image'); "
                           "return !i.hidden && i.complete && i.naturalWidth > 0; }", timeout=60_000)
    assert page.text_content("#translation") == best.text
    source = page.get_attribute("#attention-image", "src")
    assert source.startswith("data:image/png;base64,")
    png = base64.b64decode(source.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # One 26-pixel cell per source piece across and per output piece (and EOS) down, after the labels.
    size = page.eval_on_selector("#attention-image", "i => [i.naturalWidth, i.naturalHeight]")
    assert size == [90 + 26 * len(best.source_tokens) + 10, 90 + 26 * (len(best.tokens) + 1) + 10]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#prompt").press_sequentially("north east", delay=10)
    first_suggestion_is(page, "south")
    shot = ARTIFACTS / "demo-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_the_gradient_norms_follow_the_text_beside_the_hidden_state(page, cycle_run: Path) -> None:
    lm = nmt.load(cycle_run)
    for text in ("north east", "north east south west up"):
        page.fill("#prompt", "")
        page.locator("#prompt").press_sequentially(text, delay=10)
        expected = lm.inspect.gradients(text)
        page.wait_for_function(
            "([n, target]) => document.querySelectorAll('#trace-table td.gradient').length === n && "
            "document.querySelector('#gradient-target')?.textContent === target",
            arg=[len(expected.tokens), expected.target], timeout=60_000)
        norms = page.eval_on_selector_all("#trace-table td.gradient", "cells => cells.map(c => Number(c.dataset.norm))")
        np.testing.assert_allclose(norms, expected.norms, rtol=1e-4, atol=1e-10)
        widths = page.eval_on_selector_all("#trace-table .gradient-bar", "bars => bars.map(b => b.offsetWidth)")
        assert max(widths) == 60 and widths[int(np.argmax(expected.norms))] == 60  # the largest, full length
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "demo-gradients.png"
    page.locator("#lm-section").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_keyboard_mode_completes_the_word_being_typed_and_a_tap_takes_it(page, server: str) -> None:
    from conftest import call

    page.select_option("#keyboard-model", "keyboard")
    page.locator("#keyboard").press_sequentially("I love piz", delay=30)  # a request per keystroke
    page.wait_for_function("document.querySelector('#keyboard-mode').textContent.includes('piz') && "
                           "document.querySelector('#keyboard-chips .chip[data-rank=\"0\"]') !== null", timeout=60_000)
    code, body = call(f"{server}/v1/suggest", {"text": "I love piz", "k": 3, "model": "keyboard"})
    assert code == 200
    api = body["suggestions"][0]
    assert api["completing"] == "piz" and api["words"]
    chips = page.eval_on_selector_all(
        "#keyboard-chips .chip[data-word]", "cs => cs.map(c => [Number(c.dataset.rank), c.dataset.word, "
        "Number(c.dataset.probability)]).sort((a, b) => a[0] - b[0])")
    assert [word for _, word, _ in chips] == [w["word"] for w in api["words"]]  # the API's words ...
    # ... and its numbers
    np.testing.assert_allclose([p for _, _, p in chips], [w["probability"] for w in api["words"]], rtol=1e-6)
    first = api["words"][0]["word"]
    assert first.startswith("piz")
    page.locator("#keyboard-chips .chip[data-rank=\"0\"]").click()
    assert page.input_value("#keyboard") == f"I love {first} "
    # After the tap the text ends with a space: the chips turn to next words.
    page.wait_for_function("document.querySelector('#keyboard-mode').textContent === 'next words'", timeout=60_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator("#keyboard-section").screenshot(path=str(ARTIFACTS / "demo-keyboard.png"))
