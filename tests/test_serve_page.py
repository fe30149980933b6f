"""The chat page at `/`, in a real headless browser (Debian's chromium and chromium-driver, driven by selenium):
type a message, read the streamed answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")

from franken_rt.eval.serving import running_server  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.slow  # a browser and two streamed replies: 10-30 s
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                    "(tools/setup.sh --test installs them)")
def test_chat_page_streams_an_answer(smollm_gguf: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    with running_server(smollm_gguf, "--alias", "smol") as server:
        browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
        try:
            browser.set_page_load_timeout(30)
            browser.get(server.url + "/")
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: b.find_element(By.ID, "model").text == "smol")
            box = browser.find_element(By.ID, "prompt")
            box.send_keys("Write a short poem about the sea.")
            browser.find_element(By.ID, "send").click()
            wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".msg[data-done='true']"))
            user, answer = browser.find_elements(By.CSS_SELECTOR, ".msg")
            assert user.text == "Write a short poem about the sea."
            assert "assistant" in answer.get_attribute("class") and answer.text.strip(), answer.text
            # A second turn carries the first: the page keeps the conversation.
            box.send_keys("Thanks!")
            browser.find_element(By.ID, "send").click()
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".msg[data-done='true']")) == 2)
            assert len(browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 2
        finally:
            browser.quit()
