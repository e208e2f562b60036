"""The cart page in a real browser: the seed flow clicked through, two customers side by side,
live updates, restarts of either API, phone width, keyboard use, escaping."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.browser.conftest import load_catalog
from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
# Where `make screenshot` (and every run of this module) leaves the picture of a filled cart.
SCREENSHOT = Path(os.environ.get("CART_PAGE_SCREENSHOT", ROOT / ".run" / "cart-page.png"))
PHONE_SCREENSHOT = SCREENSHOT.with_name(f"{SCREENSHOT.stem}-phone.png")
LIVE_S = 15  # generous waits for the pipeline on a busy 2-core box; the 1 s test is separate


def customer_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def open_cart(context, system, customer: str) -> Page:
    """The page, opened for `customer` by typing the id, with live updates running."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    page.goto(f"{system.read_url}/")
    page.get_by_label("Customer id").fill(customer)
    page.get_by_role("button", name="Open cart").click()
    expect(page.locator("#connection")).to_contain_text("Live", timeout=LIVE_S * 1000)
    return page


def line(page: Page, item_id: str):
    return page.locator(f'#cart-lines li[data-item-id="{item_id}"]')


def add(page: Page, name: str, qty: int = 1) -> None:
    page.get_by_label(f"Quantity of {name}", exact=True).fill(str(qty))
    page.get_by_role("button", name=f"Add {name}", exact=True).click()


def api_cart(system, customer: str) -> dict:
    resp = requests.get(f"{system.read_url}/api/v1/{customer}", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def post(system, command: str, body: dict) -> dict:
    resp = requests.post(f"{system.write_url}/api/v1/{command}", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    return resp.json()


def expect_totals_match_api(page: Page, system, customer: str) -> dict:
    """The page's cart and totals are the read API's cart."""
    cart = api_cart(system, customer)
    is_open = cart["status"] == "OPEN"
    expect(page.locator("#cart-total")).to_have_text(cart["totalPrice"] if is_open else "0.00")
    expect(page.locator("#cart-qty")).to_have_text(str(cart["totalQty"]) if is_open else "0")
    shown = page.locator("#cart-lines li").evaluate_all(
        "rows => rows.map(r => r.dataset.itemId)")
    assert shown == ([li["itemId"] for li in cart["lineItems"]] if is_open else [])
    return cart


def test_seed_flow_clicked_through(context, system) -> None:
    customer = customer_id("123")
    page = open_cart(context, system, customer)
    expect(page.locator("#cart-empty")).to_be_visible()

    for _ in range(3):
        add(page, "IPhone 12")
        page.wait_for_timeout(100)  # three separate clicks, as a person makes them
    expect(line(page, "1").locator(".facts")).to_have_text("3 × 65000.00 = 195000.00",
                                                            timeout=LIVE_S * 1000)
    # Product 2 sorts onto the catalog's second page (ids are strings: 1, 10, …, 19, 2).
    page.get_by_role("button", name="Next page").click()
    expect(page.locator("#page-number")).to_have_text("Page 2")
    add(page, "Samsung Galaxy S21")
    expect(line(page, "2")).to_be_visible(timeout=LIVE_S * 1000)
    page.get_by_role("button", name="Remove Samsung Galaxy S21", exact=True).click()
    expect(line(page, "2")).to_have_count(0, timeout=LIVE_S * 1000)
    expect(page.locator("#cart-total")).to_have_text("195000.00")
    cart = expect_totals_match_api(page, system, customer)
    assert (cart["totalQty"], cart["totalPrice"]) == (3, "195000.00")

    # Rejections in words: more than the stock, and a remove of what is not in the cart.
    page.get_by_role("button", name="Previous page").click()
    add(page, "IPhone 12", 766)
    expect(page.locator("#error")).to_have_text("Could not add IPhone 12: only 765 left.",
                                                timeout=LIVE_S * 1000)
    post(system, "remove", {"customerId": customer, "itemId": "3", "qty": 1})
    expect(page.locator("#error")).to_have_text(
        "Could not remove Pixel 8: it is not in your cart.", timeout=LIVE_S * 1000)
    expect(page.locator("#rejections li")).to_have_text([
        "Could not remove Pixel 8: it is not in your cart.",
        "Could not add IPhone 12: only 765 left.",
    ])

    page.get_by_role("button", name="Check out").click()
    order = page.locator("#orders > li").first
    expect(order).to_contain_text("total 195000.00", timeout=LIVE_S * 1000)
    expect(page.locator("#cart-empty")).to_be_visible()
    expect(page.locator("#checkout")).to_be_disabled()
    orders = requests.get(f"{system.read_url}/api/v1/{customer}/orders", timeout=10).json()
    assert [o["cartId"] for o in orders["items"]] == [order.get_attribute("data-cart-id")]
    assert orders["items"][0]["totalPrice"] == "195000.00"
    expect_totals_match_api(page, system, customer)
    assert page.js_errors == []  # type: ignore[attr-defined]


def test_two_customers_in_two_browser_contexts_do_not_see_each_other(browser, system) -> None:
    alice, bob = customer_id("alice"), customer_id("bob")
    ctx_a, ctx_b = browser.new_context(), browser.new_context()
    try:
        page_a = open_cart(ctx_a, system, alice)
        page_b = open_cart(ctx_b, system, bob)
        add(page_a, "IPhone 12", 2)
        add(page_b, "Kindle Paperwhite", 1)
        expect(line(page_a, "1")).to_be_visible(timeout=LIVE_S * 1000)
        expect(line(page_b, "10")).to_be_visible(timeout=LIVE_S * 1000)
        post(system, "add", {"customerId": bob, "itemId": "5", "qty": 4})
        expect(line(page_b, "5")).to_be_visible(timeout=LIVE_S * 1000)
        # Give a stray update time to arrive where it must not.
        page_a.wait_for_timeout(500)
        expect(page_a.locator("#cart-lines li")).to_have_count(1)
        expect(page_b.locator("#cart-lines li")).to_have_count(2)
        assert expect_totals_match_api(page_a, system, alice)["totalPrice"] == "130000.00"
        assert expect_totals_match_api(page_b, system, bob)["totalPrice"] == "15995.00"
        expect(page_a.locator("#cart-customer")).to_have_text(f"(customer {alice})")
    finally:
        ctx_a.close()
        ctx_b.close()


def test_an_add_from_curl_appears_on_an_open_page_within_a_second(context, system) -> None:
    customer = customer_id("live")
    page = open_cart(context, system, customer)
    # The first command of a fresh system warms the pipeline (connections, caches): untimed.
    post(system, "add", {"customerId": customer, "itemId": "7", "qty": 1})
    expect(line(page, "7")).to_be_visible(timeout=LIVE_S * 1000)
    took = []
    for qty in (2, 3, 4, 5, 6):
        post(system, "add", {"customerId": customer, "itemId": "7", "qty": 1})
        started = time.monotonic()
        expect(line(page, "7").locator(".facts")).to_contain_text(f"{qty} × ",
                                                                  timeout=LIVE_S * 1000)
        took.append(time.monotonic() - started)
    print(f"202 -> on the page: {', '.join(f'{t * 1000:.0f} ms' for t in took)}")
    # The median, not each one: a single stall of this busy 2-core box (a broker's GC, the
    # aggregator's snapshot) is not the page being slow. Typical figures are 45-90 ms.
    assert sorted(took)[len(took) // 2] < 1.0, took


def test_the_page_survives_restarts_of_both_apis(context, system) -> None:
    customer = customer_id("restart")
    page = open_cart(context, system, customer)
    add(page, "IPhone 12")
    expect(line(page, "1")).to_be_visible(timeout=LIVE_S * 1000)

    system.kill("read-api")
    expect(page.locator("#connection")).to_have_class("down", timeout=LIVE_S * 1000)
    expect(page.locator("#connection")).to_contain_text("reconnecting")
    system.start("read-api")
    system.wait_healthy()
    expect(page.locator("#connection")).not_to_have_class("down", timeout=LIVE_S * 1000)
    post(system, "add", {"customerId": customer, "itemId": "1", "qty": 1})
    expect(line(page, "1").locator(".facts")).to_contain_text("2 × ", timeout=LIVE_S * 1000)

    system.kill("write-api")
    add(page, "IPhone 12")
    expect(page.locator("#error")).to_contain_text("cannot be reached", timeout=LIVE_S * 1000)
    expect(page.locator("#error")).to_contain_text("add 1 × IPhone 12 was not sent")
    system.start("write-api")
    system.wait_healthy()
    add(page, "IPhone 12")
    expect(page.locator("#error")).to_be_hidden()
    expect(line(page, "1").locator(".facts")).to_contain_text("3 × ", timeout=LIVE_S * 1000)


def test_phone_width_keyboard_and_labels(context, system) -> None:
    customer = customer_id("phone")
    page = context.new_page()
    page.goto(f"{system.read_url}/")
    # Keyboard only: the id field, Enter; Tab reaches the first quantity; Enter adds.
    page.get_by_label("Customer id").focus()
    page.keyboard.type(customer)
    page.keyboard.press("Enter")
    expect(page.locator("#connection")).to_contain_text("Live", timeout=LIVE_S * 1000)
    page.get_by_label("Quantity of IPhone 12", exact=True).focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    page.keyboard.press("Enter")
    expect(line(page, "1")).to_be_visible(timeout=LIVE_S * 1000)
    post(system, "add", {"customerId": customer, "itemId": "12", "qty": 1})
    expect(page.locator("#cart-lines li")).to_have_count(2, timeout=LIVE_S * 1000)
    # A quantity that is not one is refused on the page, in words, with the field marked.
    qty = page.get_by_label("Quantity of IPhone 12", exact=True)
    qty.fill("0")
    page.get_by_role("button", name="Add IPhone 12", exact=True).click()
    expect(page.locator("#error")).to_contain_text("whole number from 1 to 10000")
    expect(qty).to_have_attribute("aria-invalid", "true")
    expect(qty).to_be_focused()

    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] == 390, f"horizontal scroll at phone width: {width}"
    # Every control has a name a screen reader reads out.
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, button, textarea')]
        .filter(e => e.offsetParent !== null)
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                     && !e.textContent.trim())
        .map(e => e.outerHTML)""")
    assert unnamed == []
    assert page.locator("[aria-live]").count() >= 3


def test_values_from_the_server_are_text_never_markup(context, system, tmp_path) -> None:
    hostile = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
    catalog = tmp_path / "hostile.jsonl"
    catalog.write_text(json.dumps({"productId": "zz-html", "productName": hostile,
                                   "price": "1.50", "stockQty": 3}) + "\n")
    load_catalog(system, catalog)
    deadline = time.monotonic() + 30
    while requests.get(f"{system.read_url}/api/v1/products/zz-html", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the product never landed"
        time.sleep(0.2)
    customer = customer_id("esc")
    page = open_cart(context, system, customer)
    post(system, "add", {"customerId": customer, "itemId": "zz-html", "qty": 1})
    expect(line(page, "zz-html").locator(".name")).to_have_text(hostile, timeout=LIVE_S * 1000)
    post(system, "add", {"customerId": customer, "itemId": "zz-html", "qty": 5})  # > stock
    expect(page.locator("#error")).to_have_text(f"Could not add {hostile}: only 2 left.",
                                                timeout=LIVE_S * 1000)
    assert page.locator("#shop img, #shop b, #error img").count() == 0
    assert page.evaluate("() => window.__pwned") is None


def test_screenshot_of_a_filled_cart(browser, system) -> None:
    customer = customer_id("shot")
    post(system, "add", {"customerId": customer, "itemId": "9", "qty": 1})
    ack = post(system, "checkout", {"customerId": customer})
    requests.get(f"{system.read_url}/api/v1/{customer}",
                 params={"minOffset": ack["readToken"], "timeout": 30000}, timeout=40)
    for item, qty in (("1", 3), ("7", 2), ("5", 4)):
        post(system, "add", {"customerId": customer, "itemId": item, "qty": qty})
    post(system, "remove", {"customerId": customer, "itemId": "3", "qty": 1})
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = open_cart(ctx, system, customer)
        expect(page.locator("#cart-lines li")).to_have_count(3, timeout=LIVE_S * 1000)
        expect(page.locator("#orders > li")).to_have_count(1, timeout=LIVE_S * 1000)
        expect(page.locator("#rejections li")).to_have_count(1, timeout=LIVE_S * 1000)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(PHONE_SCREENSHOT), full_page=True)
    finally:
        ctx.close()
    for shot in (SCREENSHOT, PHONE_SCREENSHOT):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
