"""The offline handout (`make html`), opened from file:// with every other request refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from course_pages import NOTEBOOKS, RAW_MATH, SCREENSHOTS, SITE, GuardedPage, stored


def wait_for_mathjax(page) -> None:
    """Until MathJax 2 has typeset the page (its queue runs after the Typeset call the template makes)."""
    page.wait_for_function("() => window.MathJax && MathJax.Hub")
    page.evaluate("() => new Promise(done => MathJax.Hub.Queue(done))")


def test_index_links_every_notebook_in_order(site_page: GuardedPage) -> None:
    page = site_page.page
    page.goto((SITE / "index.html").as_uri())
    hrefs = page.eval_on_selector_all("ul.notebooks a", "as => as.map(a => a.getAttribute('href'))")
    assert hrefs == [nb.with_suffix(".html").name for nb in NOTEBOOKS]
    for href in hrefs:
        assert (SITE / href).exists(), f"the index links {href}, which the site lacks"
    site_page.assert_offline()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_page_renders_offline(site_page: GuardedPage, nb: Path) -> None:
    """Every figure loads, every formula is typeset without error, every saved widget shows."""
    expect = stored(nb)
    page = site_page.page
    page.goto((SITE / nb.with_suffix(".html").name).as_uri())
    page.wait_for_load_state("load")
    wait_for_mathjax(page)
    images = page.eval_on_selector_all(
        ".jp-OutputArea-output img", "imgs => imgs.map(i => i.complete && i.naturalWidth > 0)")
    assert len(images) >= expect["png"] and all(images), f"figures: {images}, {expect['png']} stored"
    if expect["math"]:
        assert page.locator(".MathJax_CHTML").count() > 0, "no formula was typeset"
    assert page.locator(".MathJax_Error, .MathJax_CHTML merror, mjx-merror").count() == 0
    untypeset = RAW_MATH.findall(" ".join(page.locator(".jp-MarkdownCell").all_inner_texts()))
    assert not untypeset, f"formulas left as TeX: {untypeset[:3]}"
    shown = page.locator(".jp-OutputArea-output img").first
    if expect["widgets"]:
        views = ".jp-OutputArea-output.jupyter-widgets"
        page.wait_for_function(f"() => [...document.querySelectorAll('{views}')]"
                               ".every(v => v.querySelector('.lm-Widget'))", timeout=30_000)
        assert page.locator(views).count() == expect["widgets"], "not every saved widget view is on the page"
        shown = page.locator(views).first
    assert page.get_by_text("Error displaying widget").count() == 0
    if shown.count():
        shown.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / f"html-{nb.stem}.png"))
    site_page.assert_offline()
    assert not site_page.console_errors, f"the page logged errors: {site_page.console_errors}"
