"""The demo as a person sees it: index.html and its three reports rendered in headless Chromium."""

import shutil

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"),
]
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from lrp_domains.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo"), progress=False)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield instance
        instance.close()


def _open(browser, path):
    page = browser.new_page()
    messages, failed = [], []
    page.on("console", lambda message: messages.append((message.type, message.text)))
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    return page, messages, failed


def test_index_shows_three_sections_with_their_images(demo, browser):
    page, messages, failed = _open(browser, demo)
    headings = page.eval_on_selector_all("h2", "nodes => nodes.map(n => n.textContent)")
    assert headings == ["Text", "Sequences", "Genes"]
    widths = page.eval_on_selector_all("img", "nodes => nodes.map(n => n.naturalWidth)")
    assert len(widths) >= 3 and all(w > 0 for w in widths)
    for section in ("text", "sequences", "genes"):
        assert page.locator(f"section#{section} img, section#{section} span[title]").count() > 0
    assert page.locator("span[title]").count() > 20  # word heatmap with values on hover
    assert not [m for m in messages if m[0] in ("error", "warning")] and not failed
    links = page.eval_on_selector_all("a[href$='report.html']", "nodes => nodes.map(n => n.getAttribute('href'))")
    assert sorted(links) == ["genes/report.html", "sequences/report.html", "text/report.html"]
    for link in links:
        report, report_messages, report_failed = _open(browser, demo.parent / link)
        images = report.eval_on_selector_all("img", "nodes => nodes.map(n => n.naturalWidth)")
        assert all(w > 0 for w in images)
        assert not [m for m in report_messages if m[0] == "error"] and not report_failed


def test_html_in_a_text_is_shown_never_run(browser, tmp_path):
    import text_models as T

    from lrp_domains.report.text import write_text_report
    from lrp_domains.text import TextExplainer

    text = 'A <script>console.error("ran")</script> film <img src=x onerror="console.error(1)"> & more'
    results = TextExplainer(T.encoder("bert", num_labels=2), T.wordpiece_tokenizer()).explain([text])
    written = write_text_report(results, tmp_path, notes=["<b>note</b>"])
    page, messages, failed = _open(browser, written["report"])
    assert not messages and not failed
    assert page.locator("script").count() == 0 and page.locator("section img").count() == 0
    shown = page.locator(".lrp-text").first.inner_text()
    assert "<script>" in shown and "<img" in shown


def test_pages_fit_a_normal_window(demo, browser):
    """Long lists (the genes page's shared_genes) wrap: no page is wider than a 1,280 px window."""
    for path in (demo, *(demo.parent / name / "report.html" for name in ("text", "sequences", "genes"))):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        width = page.evaluate("document.body.scrollWidth")
        assert width <= 1200, f"{path.relative_to(demo.parent)} is {width} px wide"
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        page.close()
