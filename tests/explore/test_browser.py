"""End to end: the explorer in headless Chromium (Debian's chromium + chromium-driver, through selenium).

Starts the real server (uvicorn) on a free local port, moves the seed and psi controls as a user would (a drag
on the seed pad, typing a seed, arrow keys on the psi slider), waits for the frame of that state, and checks
that the picture on the page changed and equals ``styleforge generate`` for the same seed and psi, pixel for
pixel (the frames are PNG); and that the capture buttons download the frame's PNG and its w, and that
uploading that w shows the same picture. A screenshot is saved in the test's tmp dir, and copied to
``$STYLEFORGE_EXPLORE_SCREENSHOT`` when that is set. Without chromium the test skips, except in CI.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from styleforge.cli.main import cli
from styleforge.explore.render import Explorer
from tests.conftest import IN_CI
from tests.explore.conftest import decode, require

FRAME_TIMEOUT_S = 30


def _browser_paths() -> tuple[str, str]:
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chrome is None or driver is None:
        msg = "headless Chromium is missing (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(msg + "; .ci/run installs it, so in CI this is an error")
        pytest.skip(msg)
    return chrome, driver


@pytest.fixture(scope="module")
def server_url():
    yield from serve(Explorer(["builtin:emoji"]))


def serve(explorer: Explorer):
    """Run the real server (uvicorn) for ``explorer`` on a free local port in a thread; yields its URL."""
    require("uvicorn")
    import uvicorn

    from styleforge.explore.server import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the explorer server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    chrome, driver_path = _browser_paths()
    require("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    yield driver
    driver.quit()


def _wait(driver, condition_js: str, what: str):
    deadline = time.monotonic() + FRAME_TIMEOUT_S
    while time.monotonic() < deadline:
        value = driver.execute_script(condition_js)
        if value:
            return value
        time.sleep(0.05)
    errors = driver.execute_script("return window.styleforgeExplore && window.styleforgeExplore.errors")
    raise AssertionError(f"timed out waiting for {what}; page errors: {errors}")


def _frame_for(driver, seed: float, psi: float) -> np.ndarray:
    """Wait for the frame rendered from exactly this seed and psi, and decode its pixels."""
    js = f"""
        const f = window.styleforgeExplore.lastFrame;
        return f && f.request && f.request.seed === {seed} && f.request.psi === {psi};
    """
    _wait(driver, js, f"the frame of seed {seed}, psi {psi}")
    return _shown_pixels(driver)


def _shown_pixels(driver) -> np.ndarray:
    """Pixels of the frame the page shows now (its PNG, fetched back from the page's blob URL)."""
    data = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(window.styleforgeExplore.lastFrame.url).then((r) => r.arrayBuffer()).then((buf) => {
            let s = ""; const b = new Uint8Array(buf);
            for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
            done(btoa(s));
        });
    """)
    return decode(base64.b64decode(data))


def test_seed_and_psi_controls_render_what_generate_writes(server_url, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server_url)
    first = _frame_for(browser, 0, 1)
    assert first.shape == (32, 32, 3)

    # Drag on the seed pad: fractional seeds, a new picture.
    pad = browser.find_element(By.ID, "seed-drag")
    ActionChains(browser).click_and_hold(pad).move_by_offset(40, 0).move_by_offset(35, 0).release().perform()
    dragged_seed = browser.execute_script("return window.styleforgeExplore.state.seed")
    assert 0 < dragged_seed != round(dragged_seed)
    dragged = _frame_for(browser, dragged_seed, 1)
    assert not np.array_equal(dragged, first)

    # Type seed 5, then psi 1.00 -> 0.70 with 30 presses of the left arrow on the slider.
    seed_box = browser.find_element(By.ID, "seed")
    seed_box.send_keys(Keys.CONTROL, "a")
    seed_box.send_keys("5")
    psi = browser.find_element(By.ID, "psi")
    browser.execute_script("arguments[0].focus()", psi)
    psi.send_keys(*[Keys.ARROW_LEFT] * 30)
    assert browser.find_element(By.ID, "psi-value").text == "0.70"
    shown = _frame_for(browser, 5, 0.7)
    assert not np.array_equal(shown, first)

    result = CliRunner().invoke(
        cli, ["generate", "--network", "builtin:emoji", "--seeds", "5", "--trunc", "0.7", "--device", "cpu",
              "--outdir", str(tmp_path / "gen")], catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    generated = np.array(Image.open(tmp_path / "gen" / "seed0005.png").convert("RGB"))
    assert np.array_equal(shown, generated)

    status = browser.find_element(By.ID, "status").text
    assert "render" in status and "ms" in status and "32×32 png" in status
    assert browser.find_element(By.ID, "error").text == ""
    shot = tmp_path / "explore.png"
    assert browser.save_screenshot(str(shot))
    pixels = np.array(Image.open(shot).convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.std() > 10
    if os.environ.get("STYLEFORGE_EXPLORE_SCREENSHOT"):
        shutil.copy(shot, Path(os.environ["STYLEFORGE_EXPLORE_SCREENSHOT"]))

    # A second tab works at the same time.
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(server_url)
    assert np.array_equal(_frame_for(browser, 0, 1), first)
    browser.close()
    browser.switch_to.window(first_tab)


def _downloaded(folder: Path, pattern: str) -> Path:
    deadline = time.monotonic() + FRAME_TIMEOUT_S
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(pattern) if not p.name.endswith(".crdownload")]
        if done:
            return done[0]
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} was downloaded into {folder}")


def test_capture_buttons_and_projected_w_upload(server_url, browser, downloads):
    from selenium.webdriver.common.by import By

    browser.get(server_url)
    seed_box = browser.find_element(By.ID, "seed")
    seed_box.clear()
    seed_box.send_keys("3")
    frame = _frame_for(browser, 3, 1)
    browser.find_element(By.ID, "capture-png").click()
    png = _downloaded(downloads, "frame_seed3.png")
    assert np.array_equal(np.array(Image.open(png).convert("RGB")), frame)
    browser.find_element(By.ID, "capture-w").click()
    npz = _downloaded(downloads, "w_seed3.npz")
    with np.load(npz) as data:
        assert data["w"].shape == (1, 8, 32)

    seed_box.clear()
    seed_box.send_keys("4")
    other = _frame_for(browser, 4, 1)
    assert not np.array_equal(other, frame)
    browser.find_element(By.ID, "upload-w").send_keys(str(npz))
    _wait(browser, "const f = window.styleforgeExplore.lastFrame; return f && f.request && f.request.latent === 'w'",
          "the frame of the uploaded w")
    assert np.array_equal(_shown_pixels(browser), frame)  # the captured w reproduces seed 3
