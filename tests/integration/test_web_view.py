"""The venue's web view in a real headless browser (Debian's Chromium, driven by
Selenium), while a live flash crash runs on the services: the book, the chart and the
liquidation feed fill and update, and an account's positions are what ccxt's
fetch_positions says."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from services.sim.live import LiveMarket
from tests.integration.test_gateway import scenario_venue, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser() -> webdriver.Chrome:
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), \
        "the browser test needs Debian's chromium and chromium-driver (.ci/run installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1300"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def until(condition, timeout: float = 20.0):
    """Poll ``condition`` (in the browser's thread) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def cells(driver, table: str) -> list[list[str]]:
    """A table's cells as shown, read in one go (the page replaces its rows twice a second)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))"
        ".map(row => Array.from(row.cells).map(cell => cell.textContent));", f"#{table}")


async def test_the_web_view_follows_a_live_flash_crash_and_shows_an_accounts_positions(tmp_path):
    async with scenario_venue("flash-crash") as (client, gateway, scenario):
        market = LiveMarket(gateway.bus, gateway.markets, scenario)
        run = asyncio.create_task(market.run(duration_s=26))  # the crash: 15 s to 23 s
        driver = await asyncio.to_thread(browser)
        try:
            await client.deposit("bot", "5000")
            async with signed(gateway, "bot") as bot:
                await asyncio.sleep(4)  # the market makers quote
                await bot.set_margin_mode("isolated", "SOL/USDT:USDT")
                await bot.set_leverage(5, "SOL/USDT:USDT")
                await bot.create_order("SOL/USDT:USDT", "market", "buy", 2)
                key = bot.apiKey
                await asyncio.to_thread(driver.get, f"{gateway.base}/?account={key}")

                def live_book():
                    status = driver.find_element(By.ID, "status").text
                    return status == "live" and len(cells(driver, "book")) > 3 and cells(driver, "trades")

                assert await asyncio.to_thread(until, live_book), driver.page_source[:2000]
                assert driver.find_element(By.ID, "symbol").text == "SOL-PERP"
                chart = driver.find_element(By.ID, "chart")
                before = int(chart.get_attribute("data-points"))
                await asyncio.sleep(3)
                assert int(chart.get_attribute("data-points")) > before  # it updates as the market runs

                # the account, entered by its API key: its position as ccxt sees it
                [position] = await bot.fetch_positions(["SOL/USDT:USDT"])

                def shown():
                    rows = cells(driver, "positions")
                    return rows if rows and rows[0][0] == "SOL-PERP" else None

                [row] = await asyncio.to_thread(until, shown)
                assert row[1] == position["side"] == "long"
                assert float(row[2]) == position["contracts"] == 2.0
                assert row[3] == position["marginMode"] == "isolated" and row[4] == "5x"
                assert float(row[5]) == pytest.approx(position["entryPrice"])
                assert float(row[9]) == pytest.approx(position["liquidationPrice"], abs=0.01)
                assert driver.find_element(By.ID, "account-view").get_attribute("data-account") == "bot"

                # the crash: the feed fills with liquidations of both modes, the chart marks them
                def liquidated():
                    modes = {row[3] for row in cells(driver, "liquidations") if len(row) > 3}
                    return modes >= {"isolated", "cross"} and int(chart.get_attribute("data-liquidations")) > 0

                assert await asyncio.to_thread(until, liquidated, 40), cells(driver, "liquidations")[:5]
                await asyncio.to_thread(driver.save_screenshot, str(tmp_path / "web.png"))
                assert (tmp_path / "web.png").stat().st_size > 20_000
        finally:
            await asyncio.to_thread(driver.quit)
            await run
