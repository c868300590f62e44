"""Drive `tunery webui` in headless Chromium: pick a tiny model (its template is preset), train it, watch
progress and the loss plot, pick the trained adapter, then chat with the result.

Screenshots of each tab go to the test's temporary folder; set TUNERY_DOCS_SCREENSHOTS=docs/images
to refresh the ones docs/webui.md shows (a deliberate docs step, never a side effect of `make test`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout:.0f}s")


@pytest.fixture
def webui(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (make test installs it with apt-get)")
    pytest.importorskip("playwright")
    pytest.importorskip("gradio")
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}
    for key in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "GRADIO_SERVER_NAME", "TUNERY_WEBUI_AUTH"):
        env.pop(key, None)
    log = open(tmp_path / "webui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "tunery", "webui"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", 120)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def fill(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(value)
    box.press("Tab")


def make_dataset(folder: Path) -> None:
    folder.mkdir()
    rows = [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{i} plus {i} is {2 * i}."}
            for i in range(16)]
    (folder / "tiny.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"tiny": {"file_name": "tiny.json"}}))


def test_train_then_chat_in_the_browser(webui, tmp_path, tiny_chatml_model):
    from playwright.sync_api import expect, sync_playwright

    data_dir = tmp_path / "data"
    make_dataset(data_dir)
    out = tmp_path / "saves" / "tiny"
    docs = os.environ.get("TUNERY_DOCS_SCREENSHOTS")
    images = (REPO / docs) if docs else tmp_path / "screenshots"
    images.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600}, locale="en-US")
        page.goto(webui)
        # started where no ./data exists: the form offers the packaged demo data and says so
        expect(page.locator("#dataset_hint")).to_be_visible(timeout=30_000)
        expect(page.locator("#dataset_dir textarea, #dataset_dir input").first).to_have_value(
            re.compile(r"demo_data$"))
        # a model folder put in the workspace after start; the model field takes a typed path
        shutil.copytree(tiny_chatml_model, tmp_path / "models" / "tiny")
        model = page.locator("#model_name_or_path input").first
        model.click()
        model.fill("models/tiny")
        model.press("Enter")
        page.keyboard.press("Escape")
        fill(page, "dataset_dir", str(data_dir))
        dataset = page.locator("#dataset input").first
        dataset.click()
        dataset.fill("tiny")
        dataset.press("Enter")
        page.keyboard.press("Escape")
        for elem_id, value in (("max_steps", "6"), ("logging_steps", "1"), ("save_steps", "100"),
                               ("cutoff_len", "128"), ("learning_rate", "5e-3")):
            fill(page, elem_id, value)
        fill(page, "output_dir", str(out))

        page.locator("#preview_cmd").click()
        expect(page.locator("#command_preview")).to_contain_text("tunery train", timeout=30_000)
        expect(page.locator("#command_preview")).to_contain_text("--dataset tiny", timeout=30_000)

        page.locator("#start").click()
        expect(page.locator("#train_status")).to_contain_text("Finished", timeout=300_000)
        progress = page.locator("#progress [role=progressbar]").first
        expect(progress).to_have_attribute("aria-valuenow", "100", timeout=30_000)
        assert page.locator("#progress input").count() == 0  # a bar, not a draggable slider
        expect(page.locator("#loss_plot canvas, #loss_plot svg").first).to_be_visible(timeout=30_000)
        assert (out / "training_args.yaml").is_file() and (out / "trainer_log.jsonl").is_file()
        # no dead space: the command block is as tall as its text, the page ends soon after the loss plot
        assert page.locator("#command_preview").bounding_box()["height"] < 600
        # the demo-data hint went away when another dataset folder was typed
        expect(page.locator("#dataset_hint")).to_be_hidden()
        # no dead space: the page ends soon after its lowest visible element (text, plot or control)
        height, lowest = page.evaluate("""() => {
          let lowest = 0;
          for (const el of document.querySelectorAll('body *')) {
            if (el.children.length || !el.offsetParent) continue;  // leaves that are shown
            const r = el.getBoundingClientRect();
            if (r.height > 0 && r.width > 0) lowest = Math.max(lowest, r.bottom + window.scrollY);
          }
          return [document.documentElement.scrollHeight, lowest];
        }""")
        assert height - lowest < 500, (height, lowest)
        assert page.locator("#loss_plot").bounding_box()["height"] > 0
        page.screenshot(path=str(images / "webui_train.png"), full_page=True)

        # a second Start into the finished folder is refused and leaves its files as they were
        before = (out / "training_args.yaml").read_bytes()
        page.locator("#start").click()
        expect(page.locator("#train_status")).to_contain_text("already holds a finished", timeout=30_000)
        assert (out / "training_args.yaml").read_bytes() == before

        page.locator("#past_runs").get_by_text("Past runs").click()
        expect(page.locator("#runs_table")).to_contain_text("saves/tiny", timeout=30_000)

        page.get_by_role("tab", name="Evaluate & Predict").click()
        page.screenshot(path=str(images / "webui_eval.png"), full_page=True)
        page.get_by_role("tab", name="Export").click()
        page.screenshot(path=str(images / "webui_export.png"), full_page=True)

        page.get_by_role("tab", name="Chat").click()
        # the model menu lists the folder, and picking it presets the template from its tokenizer (auto)
        template = page.locator("#template input").first
        template.click()
        template.fill("default")
        template.press("Enter")
        page.keyboard.press("Escape")
        expect(template).to_have_value("default")
        model.click()
        page.get_by_role("option", name="models/tiny", exact=True).click()
        page.keyboard.press("Escape")
        expect(template).to_have_value("auto", timeout=30_000)
        # the adapter picker lists the finished run under saves/
        page.locator("#adapter_name_or_path input").first.click()
        page.get_by_role("option", name="saves/tiny", exact=True).click()
        page.keyboard.press("Escape")
        page.locator("#load_model").click()
        expect(page.locator("#model_status textarea, #model_status input").first).to_have_value(
            "Model loaded.", timeout=120_000)
        fill(page, "chat_max_new_tokens", "16")
        fill(page, "message", "What is 2 plus 2?")
        page.locator("#send").click()
        bot = page.locator("#chatbot [data-testid='bot']").last
        expect(bot).to_have_text(re.compile(r"\S"), timeout=120_000)
        assert "No model loaded" not in bot.inner_text()
        page.screenshot(path=str(images / "webui_chat.png"), full_page=True)

        page.locator("#lang input").first.click()
        page.get_by_role("option", name="zh").click()
        expect(page.get_by_role("tab", name="训练")).to_be_visible(timeout=30_000)

        # a browser that asks for Chinese gets the Chinese interface without choosing it
        zh_page = browser.new_page(locale="zh-CN")
        zh_page.goto(webui)
        expect(zh_page.get_by_role("tab", name="训练")).to_be_visible(timeout=30_000)
        browser.close()
