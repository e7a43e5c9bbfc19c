"""The notebooks in a real JupyterLab, as a learner opens them (on working copies, never notebooks/)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from course_pages import NOTEBOOKS, RAW_MATH, ROOT, SCREENSHOTS, GuardedPage, LabServer, api, stored

OPEN_TIMEOUT_MS = 120_000
RUN_TIMEOUT_MS = 300_000  # running a notebook's cells up to its widget, on a loaded 2-core CPU


def git_status() -> str:
    """What git sees changed in the files JupyterLab or a kernel could write: notebooks/ and data/."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "notebooks", "data"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def status_before(lab: LabServer) -> str:
    return git_status()


def open_notebook(guard: GuardedPage, lab: LabServer, nb: Path) -> None:
    """Open ``nb``'s working copy in its own workspace; return once its kernel is idle."""
    page = guard.page
    page.goto(lab.notebook_url(nb.name, workspace=f"test-{nb.stem}"))
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                           " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=OPEN_TIMEOUT_MS)
    page.evaluate("""async () => {
        const panel = window.jupyterapp.shell.currentWidget;
        await panel.context.ready; await panel.sessionContext.ready;
        while (!panel.sessionContext.session?.kernel || panel.sessionContext.session.kernel.status !== 'idle')
            await new Promise(r => setTimeout(r, 200));
    }""")


def raw_math_left(page, wait_s: float = 60) -> list[str]:
    """TeX still untypeset in the rendered markdown after up to ``wait_s`` (MathJax works asynchronously)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = RAW_MATH.findall(" ".join(page.locator(".jp-RenderedMarkdown").all_inner_texts()))
        if not found or time.monotonic() > deadline:
            return found
        page.wait_for_timeout(500)


def wait_idle(page) -> None:
    """Until the notebook's kernel has nothing left to run (a slider's callback included)."""
    page.wait_for_timeout(500)  # a message just sent may not have made the kernel busy yet
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
                           " === 'idle'", timeout=RUN_TIMEOUT_MS, polling=200)


def run_command(guard: GuardedPage, command: str) -> None:
    """Execute a JupyterLab command and wait for it (running cells resolves once they have run)."""
    guard.page.evaluate("c => window.jupyterapp.commands.execute(c)", command)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_opens_with_figures_math_and_no_widget_error(
        lab_page: GuardedPage, lab: LabServer, status_before: str, nb: Path) -> None:
    expect = stored(nb)
    as_copied = json.loads(lab.working_copy(nb.name).read_text())
    open_notebook(lab_page, lab, nb)
    page = lab_page.page
    page.wait_for_function("n => document.querySelectorAll('.jp-OutputArea-output img').length >= n",
                           arg=expect["png"], timeout=OPEN_TIMEOUT_MS)
    page.wait_for_function("() => [...document.querySelectorAll('.jp-OutputArea-output img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=OPEN_TIMEOUT_MS)
    if expect["math"]:
        page.wait_for_selector(".jp-RenderedMarkdown mjx-container", timeout=OPEN_TIMEOUT_MS)
    untypeset = raw_math_left(page)
    assert not untypeset, f"formulas left as TeX: {untypeset[:3]}"
    assert page.locator("mjx-merror, [data-mjx-error]").count() == 0, "a formula failed to typeset"
    assert page.get_by_text("Error displaying widget").count() == 0, "a widget shows an error"
    shown = page.locator(".jp-OutputArea-output img, .jp-RenderedMarkdown mjx-container").first
    if shown.count():
        shown.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / f"lab-{nb.stem}.png"))
    lab_page.assert_offline()

    run_command(lab_page, "docmanager:save")
    saved = json.loads(lab.working_copy(nb.name).read_text())
    (SCREENSHOTS / f"lab-saved-kernelspec-{nb.stem}.json").write_text(
        json.dumps(saved["metadata"].get("kernelspec"), indent=1) + "\n")
    assert saved["metadata"].pop("kernelspec") == server_kernelspec(lab)
    as_copied["metadata"].pop("kernelspec", None)
    assert saved == as_copied, "opening and saving in JupyterLab changed more than the kernelspec"


def server_kernelspec(lab: LabServer, name: str = "python3") -> dict[str, str]:
    """The kernelspec JupyterLab writes into a notebook it saves with the server's ``name`` kernel."""
    spec = api(lab, "GET", "kernelspecs")["kernelspecs"][name]["spec"]
    return {"display_name": spec["display_name"], "language": spec["language"], "name": name}


def widget_cell(nb: Path) -> int:
    """The index of the notebook's cell that builds its slider widget."""
    cells = json.loads(nb.read_text())["cells"]
    found = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and "Slider(" in "".join(c["source"])]
    assert found, f"{nb} has no cell making a slider"
    return found[0]


def output_of(page, index: int) -> str:
    """The rendered output of cell ``index``: its text, and the source of each image in it."""
    return page.evaluate("""i => {
        const cell = window.jupyterapp.shell.currentWidget.content.widgets[i].node;
        const out = cell.querySelector('.jp-OutputArea');
        return out.innerText + [...out.querySelectorAll('img')].map(im => im.src.slice(-200)).join('|');
    }""", index)


@pytest.mark.parametrize("nb", [nb for nb in NOTEBOOKS if nb.name.startswith(("02", "03"))],
                         ids=lambda nb: nb.stem)
def test_slider_changes_the_widget_output(lab_page: GuardedPage, lab: LabServer, status_before: str,
                                          nb: Path) -> None:
    """Run the cells up to the widget, move its first slider one step, and see its output change."""
    index = widget_cell(nb)
    open_notebook(lab_page, lab, nb)
    page = lab_page.page
    page.set_default_timeout(RUN_TIMEOUT_MS)
    page.evaluate("i => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = i; }", index)
    run_command(lab_page, "notebook:run-all-above")
    page.evaluate("i => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = i; }", index)
    run_command(lab_page, "notebook:run-cell")
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    handle = cell.locator(".widget-slider .noUi-handle").first
    handle.wait_for()
    wait_idle(page)
    before = output_of(page, index)
    assert before.strip(), "the widget cell shows no output"
    readout = cell.locator(".widget-readout").first.inner_text()
    handle.focus()
    page.keyboard.press("ArrowRight")
    moved = cell.locator(".widget-readout").first.inner_text()
    assert moved != readout, "the slider did not move"
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    while output_of(page, index) == before and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    wait_idle(page)
    after = output_of(page, index)
    assert after != before, f"moving the slider from {readout} to {moved} changed nothing"
    if nb.name.startswith("02"):
        assert f"step {moved}:" in after, f"the panel does not show step {moved}: {after[:200]}"
    assert page.get_by_text("Error displaying widget").count() == 0
    stderr = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert "Traceback" not in after + " ".join(stderr.all_inner_texts()), "a cell failed"
    cell.scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / f"lab-widget-{nb.stem}.png"))
    lab_page.assert_offline()


def test_lab_left_the_repository_unchanged(lab: LabServer, status_before: str) -> None:
    """Opening, running and saving notebooks wrote only into the working copies."""
    assert git_status() == status_before
