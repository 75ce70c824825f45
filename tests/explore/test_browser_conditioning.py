"""End to end in headless Chromium: the page shows the conditioning control the loaded network needs.

A network conditioned on 3 continuous attributes gets one slider and one number field per attribute (moving them
changes the picture, which equals ``generate --cond-vector`` for the values sent); a multi-label network gets a
check box per class and a text field kept in step with them (the picture equals ``generate --class 1,3``), and a
class the network does not have is answered with the server's message on the page. Without chromium the test
skips, except in CI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from styleforge.explore.render import Explorer
from tests.explore.test_browser import _shown_pixels, _wait, browser, downloads, serve  # noqa: F401 (fixtures)
from tests.explore.test_conditioning import _generated, conditioned_networks


@pytest.fixture(scope="module")
def nets():
    return conditioned_networks()


@pytest.fixture(scope="module")
def server_url(nets):
    yield from serve(Explorer(preloaded=nets))


def _open(driver, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "network")).select_by_value(name)
    _wait(driver, f"const i = window.styleforgeExplore.info; return i && i.name === {json.dumps(name)}",
          f"the info of {name}")


def _frame_where(driver, condition: str, what: str) -> tuple[dict, np.ndarray]:
    """Wait for a frame whose request ``r`` satisfies the JS expression ``condition``; (request, pixels)."""
    request = _wait(driver, f"const f = window.styleforgeExplore.lastFrame; const r = f && f.request; "
                            f"return r && ({condition}) && r", what)
    return request, _shown_pixels(driver)


def _visible(driver, element_id: str) -> bool:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).is_displayed()


def test_continuous_attributes_have_one_control_per_dimension(server_url, browser, nets):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server_url)
    _open(browser, "cont")
    assert _visible(browser, "cond-continuous") and not _visible(browser, "cond-class")
    assert not _visible(browser, "cond-multi")
    assert browser.find_element(By.ID, "class-legend").text == "Attributes (3)"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#cond-vector input[type=range]")) == 3
    G = nets["cont"]
    _, zero = _frame_where(browser, "r.network === 'cont' && r.cond_vector.every((v) => v === 0)", "c = 0")
    assert np.array_equal(zero, _generated(G, 0, cond_vector=[0, 0, 0]))

    slider = browser.find_element(By.ID, "cond-1")
    browser.execute_script("arguments[0].focus()", slider)
    slider.send_keys(*[Keys.ARROW_RIGHT] * 50)  # 0 -> 0.5 in steps of 0.01
    assert float(browser.find_element(By.ID, "cond-1-value").get_attribute("value")) == pytest.approx(0.5)
    typed = browser.find_element(By.ID, "cond-2-value")
    typed.send_keys(Keys.CONTROL, "a")
    typed.send_keys("-3.25")  # beyond the slider's -2..2: the slider widens
    request, moved = _frame_where(browser, "r.cond_vector[2] === -3.25 && Math.abs(r.cond_vector[1] - 0.5) < 1e-9",
                                  "c = [0, 0.5, -3.25]")
    assert request["cond_vector"][0] == 0 and "class_idx" not in request and "classes" not in request
    assert float(browser.find_element(By.ID, "cond-2").get_attribute("min")) <= -3.25
    assert not np.array_equal(moved, zero)
    assert np.array_equal(moved, _generated(G, 0, cond_vector=request["cond_vector"]))

    browser.find_element(By.ID, "cond-reset").click()
    _, again = _frame_where(browser, "r.cond_vector.every((v) => v === 0)", "c = 0 after reset")
    assert np.array_equal(again, zero)
    assert browser.find_element(By.ID, "error").text == ""


def test_multi_label_network_takes_a_set_of_classes(server_url, browser, nets):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server_url)
    _open(browser, "multi")
    assert _visible(browser, "cond-multi") and not _visible(browser, "cond-continuous")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#class-checks input[type=checkbox]")) == 4
    G = nets["multi"]
    browser.find_element(By.ID, "class-3").click()
    browser.find_element(By.ID, "class-1").click()
    request, both = _frame_where(browser, "r.network === 'multi' && JSON.stringify(r.classes) === '[1,3]'",
                                 "classes 1 and 3")
    assert "class_idx" not in request and "cond_vector" not in request
    assert browser.find_element(By.ID, "classes").get_attribute("value") == "1, 3"
    assert np.array_equal(both, _generated(G, 0, class_idx=[1, 3]))

    field = browser.find_element(By.ID, "classes")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("2, 9")
    _wait(browser, "return document.getElementById('error').textContent.includes('Class 9 is out of range')",
          "the server's message about class 9")
    assert browser.find_element(By.ID, "class-2").is_selected()
    assert not browser.find_element(By.ID, "class-1").is_selected()
    field.send_keys(Keys.BACKSPACE * 3)  # "2"
    _, two = _frame_where(browser, "JSON.stringify(r.classes) === '[2]'", "class 2 alone")
    assert np.array_equal(two, _generated(G, 0, class_idx=[2]))
    assert browser.find_element(By.ID, "error").text == ""

    _open(browser, "onehot")  # a one-class network: the plain class field again
    assert _visible(browser, "cond-class") and not _visible(browser, "cond-multi")
    request, _ = _frame_where(browser, "r.network === 'onehot'", "the one-class network's frame")
    assert request["class_idx"] == 0 and "classes" not in request
