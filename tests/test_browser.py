"""The demo in a real browser: upload a picture, press Predict, read the answer off the page.

Uses Debian's Chromium (``apt-get install chromium``; ``.ci/run`` installs it), never a browser
downloaded by ``playwright install``.
"""

import socket
from pathlib import Path

import pytest
from PIL import Image

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def train_tiny_run(run_dir):
    """seed_cnn + gap learns red/green/blue squares in a plain torch loop (a few seconds)."""
    import numpy as np
    import torch

    from tlkit import build_model
    from tlkit.runs import save_model
    from tlkit.transforms import eval_transform

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("seed_cnn", "gap", num_classes=3, image_size=24, pretrained=False,
                        class_names=list(COLOURS))
    transform = eval_transform(24, model.mean, model.std)
    pictures, labels = [], []
    for label in range(3):
        for _ in range(6):
            pixels = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
            pixels[..., label] = np.clip(pixels[..., label].astype(int) + 160, 0, 255)
            pictures.append(transform(Image.fromarray(pixels)))
            labels.append(label)
    x, y = torch.stack(pictures), torch.tensor(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(25):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    save_model(model.eval(), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tlkit.demo_app import launch

    run = train_tiny_run(tmp_path_factory.mktemp("browser") / "run")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = launch(run, port=port, prevent_thread_lock=True, runs_root=str(run.parent / "runs"), quiet=True)
    yield f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture
def page():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def test_upload_and_predict_in_the_browser(app, page, tmp_path):
    picture = tmp_path / "red.png"
    Image.new("RGB", (48, 48), COLOURS["red"]).save(picture)

    page.goto(app)
    page.wait_for_selector("#predict-button", timeout=60_000)
    page.locator("#predict-image input[type=file]").set_input_files(str(picture))
    page.locator("#predict-image img").first.wait_for(timeout=30_000)  # the upload is shown
    page.click("#predict-button")
    top = page.locator("#predict-label [data-testid=label-output-value]")
    top.wait_for(timeout=30_000)
    assert top.inner_text().strip() == "red"
    assert "%" in page.locator("#predict-label").inner_text()
    page.screenshot(path=str(tmp_path / "predict.png"), full_page=True)
    assert (tmp_path / "predict.png").stat().st_size > 10_000

    # the picture follows to the Explain tab, where one click explains it
    page.get_by_role("tab", name="Explain").click()
    page.get_by_role("button", name="Explain", exact=True).click()
    page.wait_for_function("() => document.querySelector('#explain-summary textarea')?.value.includes('red')",
                           timeout=60_000)
    summary = page.locator("#explain-summary textarea").input_value()
    assert summary.startswith("gradcam:") and "'red'" in summary
    page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)
    print(f"screenshots: {tmp_path / 'predict.png'}, {tmp_path / 'explain.png'}")
