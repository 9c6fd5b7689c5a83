"""Drives JupyterLab in headless Chromium for `cargo xtask browser` (Playwright, Debian's Chromium).

(a) the committed explorer lesson, opened as a reader opens it (not trusted, not re-run): its
    live chart is drawn and moving the temperature slider redraws the bars;
(b) one lesson run in the browser (Run All): no error output, and its plots are on the page;
(c) "Restart Kernel and Run All Cells": the restarted kernel is the warm spare the server kept
    for the lesson's folder (its log says so), and the lesson runs again on it.
Screenshots go to OUT_DIR. Prints one line per finding; exits non-zero on the first failure.

usage: python browser_test.py CONFIG.json
CONFIG: {"url", "token", "chromium", "out_dir", "explorer_nb", "run_nb", "run_timeout",
         "server_log"}
"""

import json
import os
import re
import sys
import time
import urllib.request

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

VEGA = ".jp-RenderedVegaCommon5"
# The notebook on screen: other tabs (the explorer's, or one a restored workspace reopened) stay
# in the page, hidden, with their own prompts and kernel indicators.
SHOWN = ".jp-NotebookPanel:visible"


class Failure(Exception):
    pass


def say(msg):
    print(msg, flush=True)


def wait_for_server(url, token, limit=600):
    start = time.time()
    while time.time() - start < limit:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    say(f"JupyterLab answers after {time.time() - start:.0f} s")
                    return
        except OSError:
            pass
        time.sleep(1)
    raise Failure(f"JupyterLab did not answer at {url} within {limit} s")


def open_notebook(page, url, token, path):
    page.goto(f"{url}/lab/tree/{path}?token={token}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # A JupyterLab dialog (kernel choice, news) would cover the page: dismiss any.
    for _ in range(3):
        dialog = page.locator(".jp-Dialog")
        if dialog.count() == 0:
            break
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def chart_with_sliders(page):
    """The output that holds the explorer: a Vega chart with range inputs."""
    charts = page.locator(VEGA)
    for i in range(charts.count()):
        c = charts.nth(i)
        if c.locator("input[type=range]").count() >= 2:
            return c
    return None


def check_explorer(page, cfg):
    url, token, out = cfg["url"], cfg["token"], cfg["out_dir"]
    open_notebook(page, url, token, cfg["explorer_nb"])
    deadline = time.time() + 120
    chart = None
    while time.time() < deadline:
        chart = chart_with_sliders(page)
        if chart is not None:
            break
        # The notebook's outputs render as they scroll into view: walk down the page.
        page.locator(".jp-WindowedPanel-outer, .jp-Notebook").first.evaluate(
            "e => e.scrollBy(0, 800)"
        )
        page.wait_for_timeout(300)
    if chart is None:
        raise Failure(
            "the explorer's live chart (Vega-Lite with two sliders) is not on the page of the committed lesson"
        )
    chart.scroll_into_view_if_needed()
    canvas = chart.locator("canvas, svg.marks").first
    canvas.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    chart.screenshot(path=f"{out}/explorer_before.png")
    before = bars_pixels(page, canvas)
    slider = chart.locator("input[type=range]").first
    start_value = slider.input_value()
    slider.fill("2.5")
    page.wait_for_timeout(800)
    chart.screenshot(path=f"{out}/explorer_after.png")
    after = bars_pixels(page, canvas)
    if before == after:
        raise Failure(
            f"moving the temperature slider from {start_value} to 2.5 did not change the bars"
        )
    say(f"explorer: drawn without a re-run; temperature {start_value} → 2.5 redrew the bars")
    # The tooltip (reported, not required): hover along the first bar's row.
    box = canvas.bounding_box()
    for y in (50, 56, 62):
        for x in range(60, 400, 20):
            page.mouse.move(box["x"] + x, box["y"] + y)
            page.wait_for_timeout(60)
            tip = page.locator("#vg-tooltip-element")
            if tip.count() and tip.first.is_visible() and tip.first.inner_text().strip():
                say("explorer tooltip: " + " | ".join(tip.first.inner_text().split("\n")[:6]))
                return
    say("explorer tooltip: none found by hovering the first row")


def bars_pixels(page, canvas):
    """A screenshot of the bars only (not the slider labels or the summary line below them)."""
    box = canvas.bounding_box()
    clip = {"x": box["x"], "y": box["y"] + 40, "width": box["width"], "height": box["height"] * 0.6}
    return page.screenshot(clip=clip)


def kernel_busy(page):
    prompts = page.locator(f"{SHOWN} .jp-CodeCell .jp-InputPrompt").all_inner_texts()
    return any("*" in p for p in prompts), prompts


def menu(page, top, item):
    page.locator(".lm-MenuBar-itemLabel", has_text=top).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def wait_idle(page, what):
    try:
        page.wait_for_selector(
            f"{SHOWN} .jp-Notebook-ExecutionIndicator[data-status=idle]", timeout=120_000
        )
    except PlaywrightError:
        say(f"{what}: the kernel indicator never showed idle; running anyway")


def server_log(cfg):
    with open(cfg["server_log"], encoding="utf-8", errors="replace") as f:
        return f.read()


def spare_of(cfg, folder):
    """The key of the spare the server warms for `folder`, once its log says it is warm."""
    deadline = time.time() + 600
    while time.time() < deadline:
        log = server_log(cfg)
        keys = re.findall(rf"spare kernel (\w+) \(pid \d+\) warming for .*/{folder}$", log, re.M)
        if keys and f"spare kernel {keys[-1]} warm in" in log:
            return keys[-1]
        time.sleep(1)
    raise Failure(f"the server's spare kernel for {folder}/ did not warm within 600 s")


def restart_on_spare(page, cfg):
    """Restart Kernel and Run All Cells: the new kernel is the folder's warm spare."""
    key = spare_of(cfg, os.path.dirname(cfg["run_nb"]) or ".")
    # Every prompt back to "[ ]:", so that the check below sees the new kernel's run only.
    menu(page, "Edit", "Clear Outputs of All Cells")
    menu(page, "Kernel", "Restart Kernel and Run All Cells")
    page.locator(".jp-Dialog .jp-mod-accept").first.click()
    say("restart: Restart Kernel and Run All Cells")
    run_all_and_check(page, cfg, "restart", clicked=True)
    if not re.search(rf"kernel \S+ is the warm spare {key}", server_log(cfg)):
        raise Failure(f"the restarted kernel was not the warm spare {key} (see the server's log)")
    say(f"restart: the new kernel was the warm spare {key}")


def run_lesson(page, cfg):
    url, token = cfg["url"], cfg["token"]
    open_notebook(page, url, token, cfg["run_nb"])
    run_all_and_check(page, cfg, "lesson")


def run_all_and_check(page, cfg, what, clicked=False):
    out = cfg["out_dir"]
    if not clicked:
        wait_idle(page, what)
        menu(page, "Run", "Run All Cells")
        say(f"{what}: Run All Cells")
    start = time.time()
    limit = cfg["run_timeout"]
    page.wait_for_timeout(2000)
    idle_polls, clicks = 0, 1
    while True:
        busy, prompts = kernel_busy(page)
        # (A prompt not drawn yet reads as empty text: only "[ ]:" means never run.)
        numbered = bool(prompts) and all(p.strip() != "[ ]:" for p in prompts)
        ran_any = any(any(ch.isdigit() for ch in p) for p in prompts)
        idle_polls = 0 if busy else idle_polls + 1
        # Every code cell numbered and none waiting: the run is over.
        if numbered and not busy:
            break
        if idle_polls >= 5:
            # Idle with cells never run: Run All stopped at an error (reported below), or, if no
            # cell ran at all, the request was lost while the new kernel's channels were still
            # connecting (the server answers the first websocket with an error then): again.
            if ran_any or clicks >= 4:
                break
            menu(page, "Run", "Run All Cells")
            clicks, idle_polls = clicks + 1, 0
            say(f"{what}: no cell ran, Run All Cells again ({clicks})")
        if time.time() - start > limit:
            raise Failure(f"the lesson did not finish within {limit} s (prompts: {prompts[:40]})")
        page.wait_for_timeout(2000)
    say(f"{what}: ran in {time.time() - start:.0f} s in the browser")
    # Saved, so the outputs can be read as data (the copy lives in target/, not in the repository).
    page.keyboard.press("Control+s")
    page.wait_for_timeout(1500)
    errors = page.locator(f"{SHOWN} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [t for t in errors.all_inner_texts() if t.strip()]
    # Only the notebook on screen (the explorer's tab stays open, hidden, behind it).
    vega = page.locator(f"{VEGA}:visible")
    svgs = page.locator(
        ".jp-OutputArea-output svg:visible, .jp-RenderedSVG img:visible, .jp-RenderedImage img:visible"
    )
    n_vega, n_svg = vega.count(), svgs.count()
    say(f"{what}: {n_vega} live chart(s), {n_svg} SVG/image plot(s), {len(texts)} error output(s)")
    if texts:
        raise Failure("error output in the lesson run in the browser:\n" + "\n---\n".join(texts[:3]))
    if not numbered:
        raise Failure(f"some cells never ran: {[p for p in prompts if '[ ]' in p][:5]}")
    if n_vega == 0 or n_vega + n_svg < 2:
        raise Failure(f"plots missing after the run: {n_vega} live, {n_svg} static")
    first = vega.first
    first.scroll_into_view_if_needed()
    first.locator("canvas, svg.marks").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    first.screenshot(path=f"{out}/attention.png")
    page.screenshot(path=f"{out}/{what}_run.png")


def main():
    cfg = json.load(open(sys.argv[1]))
    wait_for_server(cfg["url"], cfg["token"])
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(
                executable_path=cfg["chromium"],
                headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
        except PlaywrightError as e:
            print(
                f"BROWSER FAILED: Chromium ({cfg['chromium']}) could not start: {e}\n"
                "Install Debian's chromium (`apt-get install -y chromium`) or set LLM_LAB_CHROMIUM "
                "to a Chromium binary.",
                file=sys.stderr,
            )
            sys.exit(3)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            t = time.time()
            check_explorer(page, cfg)
            say(f"(a) explorer: {time.time() - t:.0f} s")
            if cfg.get("run_nb"):
                t = time.time()
                run_lesson(page, cfg)
                say(f"(b) lesson run: {time.time() - t:.0f} s")
                t = time.time()
                restart_on_spare(page, cfg)
                say(f"(c) restart on the spare: {time.time() - t:.0f} s")
        except (Failure, PlaywrightError) as e:
            try:
                page.screenshot(path=f"{cfg['out_dir']}/failure.png")
            except PlaywrightError:
                pass
            print(f"BROWSER FAILED: {e}", file=sys.stderr)
            sys.exit(1)
        finally:
            browser.close()
    say("browser test passed")


if __name__ == "__main__":
    main()
