"""The cart page in the secure profile: a pasted token, commands through the write API's CORS
allow-list, the live stream through a stream ticket."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import SAMPLE_CATALOG, load_catalog, wait_for_catalog
from tests.e2e.conftest import SUITE_SECURE_ENV, System, _running, make_system

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
LIVE_MS = 15_000


@pytest.fixture(scope="module")
def secure_system(endpoints, tmp_path_factory) -> Iterator[System]:
    """A secure-profile Cartstream whose write API lets the page's origin call it."""
    sys_ = make_system(endpoints, tmp_path_factory.mktemp("cartstream-browser-secure"),
                       SUITE_SECURE_ENV)
    sys_.env["CORS_ORIGINS"] = f"http://127.0.0.1:{sys_.env['READ_PORT']}"
    for running in _running(sys_):
        load_catalog(running, SAMPLE_CATALOG)
        wait_for_catalog(running, len(SAMPLE_CATALOG.read_text().splitlines()),
                         headers=running.auth(admin=True))
        yield running


def test_a_pasted_token_opens_its_customers_cart_live(context, secure_system) -> None:
    sys_ = secure_system
    customer = f"sec-{uuid.uuid4().hex[:8]}"
    page = context.new_page()
    page.goto(f"{sys_.read_url}/")
    expect(page.get_by_label("Customer id")).to_be_hidden()
    page.get_by_label("Bearer token").fill(sys_.token(customer))
    page.get_by_role("button", name="Open cart").click()
    expect(page.locator("#cart-customer")).to_have_text(f"(customer {customer})")
    expect(page.locator("#connection")).to_contain_text("Live", timeout=LIVE_MS)
    page.get_by_label("Quantity of IPhone 12", exact=True).fill("2")
    page.get_by_role("button", name="Add IPhone 12", exact=True).click()
    expect(page.locator("#cart-total")).to_have_text("130000.00", timeout=LIVE_MS)
    # Another client's command for the same customer reaches the page through the stream.
    resp = requests.post(f"{sys_.write_url}/api/v1/add", timeout=30, headers=sys_.auth(customer),
                         json={"customerId": customer, "itemId": "5", "qty": 1})
    assert resp.status_code == 202, resp.text
    expect(page.locator('#cart-lines li[data-item-id="5"]')).to_be_visible(timeout=LIVE_MS)
    assert "token" not in page.url and "ey" not in page.url  # never in the address bar


def test_a_token_that_is_not_one_is_refused_in_words(context, secure_system) -> None:
    page = context.new_page()
    page.goto(f"{secure_system.read_url}/")
    page.get_by_label("Bearer token").fill("not a token")
    page.get_by_role("button", name="Open cart").click()
    expect(page.locator("#error")).to_contain_text("That is not a token")
    expect(page.locator("#shop")).to_be_hidden()
