"""The operator dashboard in a real browser: Debian's Chromium, driven by Playwright, against a
live ``cloudstate serve``.

Instances are launched through the API (the Python client), as another operator would, and the
page must show them without being reloaded: a marker set on ``window`` after sign-in must still
be there at the end of each test. Instances meant to be seen ``stopping`` go to the account
``slow``, a simulated cloud of its own where a stop takes two seconds. Each test saves a
screenshot in ``test-artifacts/`` and fails if the page logged an error (a script exception or a
Content-Security-Policy violation).

Chromium is ``/usr/bin/chromium`` (``apt-get install -y chromium``); where it or Playwright is
missing the module is skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
VIEWPORT = {"width": 1366, "height": 768}  # a laptop screen
SETTLE = 20_000  # ms: launches and actions settle in about a second; generous for slow CI
SERVER_ENV = {
    "CLOUDSTATE_WEBHOOK_ALLOW": "127.0.0.1",  # the test's webhook receivers
    "CLOUDSTATE_DELIVERY_RETRY_SCHEDULE": "0,1",  # a failing delivery is dead in a second
    "CLOUDSTATE_DELIVERY_BREAKER_THRESHOLD": "1000",  # and is not held back by an open circuit
}


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


MISSING = _missing()
if MISSING and not IN_CI:
    pytest.skip(MISSING, allow_module_level=True)

# Imported after the check: under CI a missing Playwright is an error here, not a skip.
import server  # noqa: E402
from playwright.sync_api import (  # noqa: E402
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    expect,
    sync_playwright,
)
from server import Served, serve  # noqa: E402

from cloudstate.client import Client  # noqa: E402
from cloudstate.testing import WebhookReceiver  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server of this module's own, with a second simulated cloud where stops are slow."""
    home = tmp_path_factory.mktemp("dashboard")
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            # serve() starts from clean_env() and takes no settings: add ours there.
            base = server.clean_env
            patch.setattr(server, "clean_env", lambda: {**base(), **SERVER_ENV})
            live = stack.enter_context(serve(home))
        slow = {"path": str(home / "slow-cloud.db"), "fast": True, "stop_seconds": 2.0}
        created = httpx.post(
            f"{live.url}/v1/accounts",
            json={"name": "slow", "provider": "simulator", "config": slow},
            headers={"Authorization": f"Bearer {live.token}"},
        )
        assert created.status_code == 201, created.text
        yield live


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[Client]:
    with Client(served.url, served.token) as api:
        yield api


@dataclass(frozen=True)
class Hooks:
    """Two webhook subscriptions to the events of instances labelled ``hooked=<label>``."""

    label: str
    healthy: str  # the id of the subscription whose receiver answers 204
    failing: str  # the id of the one whose receiver answers 503: its deliveries die


@pytest.fixture(scope="module")
def hooks(client: Client) -> Iterator[Hooks]:
    label = uuid.uuid4().hex[:12]
    filters = {"labels": {"hooked": label}}
    with (
        WebhookReceiver(respond=lambda _request: (204, 0.0)) as up,
        WebhookReceiver(respond=lambda _request: (503, 0.0)) as down,
    ):
        healthy = client.subscribe(up.url, filters=filters, description="audit log")
        failing = client.subscribe(down.url, filters=filters, description="billing (down)")
        yield Hooks(label, str(healthy.id), str(failing.id))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if MISSING:
        pytest.fail(f"{MISSING} (CI=true requires it)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser session (no token yet); its screenshot is saved, its errors fail it."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        # A refused token is a 401 the browser logs as a failed load: expected, not a problem.
        if message.type == "error" and "status of 401" not in message.text:
            problems.append(f"console: {message.text}")

    tab.on("pageerror", lambda error: problems.append(f"exception: {error}"))
    tab.on("console", console)
    try:
        yield tab
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"dashboard-{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert problems == []


def sign_in(page: Page, served: Served) -> None:
    """Open the page, sign in with the admin token, and wait for the live stream."""
    page.goto(f"{served.url}/ui/")
    page.get_by_label("API token").fill(served.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#connection")).to_have_text("Live", timeout=SETTLE)
    expect(page.locator("#page-info")).to_contain_text("Page 1")  # the first page has loaded
    page.evaluate("window.notReloaded = true")


def still_the_same_page(page: Page) -> bool:
    return bool(page.evaluate("window.notReloaded === true"))


def launch(client: Client, count: int, account: str = "simulator", **labels: str) -> list[str]:
    order = client.launch(
        account=account,
        image="img-web",
        hardware_profile="small",
        labels=labels,
        instances=[{"uuid": str(uuid.uuid4())} for _ in range(count)],
    )
    return [str(instance.uuid) for instance in order.instances]


def state_of(page: Page, instance: str) -> Locator:
    return page.locator(f'#instances tr[data-uuid="{instance}"] [data-col="state"]')


def open_detail(page: Page, instance: str) -> None:
    page.locator(f'#instances tr[data-uuid="{instance}"] button.open').click()
    expect(page.locator("#detail")).to_be_visible()


# --- the acceptance scenarios -----------------------------------------------------------------


def test_a_wrong_token_is_refused(page: Page, served: Served) -> None:
    """A token the API does not know is refused with a message saying so; the fleet stays
    hidden and nothing is kept in the browser session."""
    page.goto(f"{served.url}/ui/")
    page.get_by_label("API token").fill("cst_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("refused this token")
    expect(page.locator("#instances-view")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_the_token_is_kept_in_the_session_only_and_sign_out_forgets_it(
    page: Page, served: Served
) -> None:
    """A good token opens the dashboard, live; the token is in sessionStorage (this tab's) and
    nowhere that outlives it (localStorage, cookies). Signing out forgets it and clears the
    table; signing in again works."""
    sign_in(page, served)
    expect(page.locator("#instances-view")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('cloudstate.token')") == served.token
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_focused()
    expect(page.locator("#instances-view")).to_be_hidden()
    expect(page.locator("#instances tbody tr")).to_have_count(0)
    assert page.evaluate("sessionStorage.length") == 0
    sign_in(page, served)
    expect(page.locator("#instances-view")).to_be_visible()


def test_launched_instances_appear_and_turn_running_without_a_reload(
    page: Page, served: Served, client: Client
) -> None:
    """Instances launched through the API after the page loaded appear in the table and turn
    ``running`` there, carried by the event stream: the page is never reloaded."""
    sign_in(page, served)
    uuids = launch(client, 3)
    for instance in uuids:
        expect(state_of(page, instance)).to_have_text("running", timeout=SETTLE)
    assert still_the_same_page(page)


def test_stopping_from_the_page_shows_stopping_then_stopped(
    page: Page, served: Served, client: Client
) -> None:
    """Stop, clicked in an instance's detail panel, is sent to the API; the row then shows
    ``stopping`` and, once the (slow) cloud has stopped it, ``stopped``, without a reload."""
    [instance] = launch(client, 1, account="slow")
    sign_in(page, served)
    expect(state_of(page, instance)).to_have_text("running", timeout=SETTLE)
    open_detail(page, instance)
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(state_of(page, instance)).to_have_text("stopping", timeout=SETTLE)
    expect(page.locator("#status")).to_contain_text("stop accepted")
    expect(state_of(page, instance)).to_have_text("stopped", timeout=SETTLE)
    expect(page.locator("#timeline")).to_contain_text("stopping → stopped")
    assert still_the_same_page(page)


def test_an_action_the_state_forbids_has_its_button_disabled(
    page: Page, served: Served, client: Client
) -> None:
    """On a running instance Start is disabled (its state forbids it) while Stop, Reboot and
    Destroy are enabled, as ``allowed_actions`` says."""
    [instance] = launch(client, 1)
    sign_in(page, served)
    expect(state_of(page, instance)).to_have_text("running", timeout=SETTLE)
    open_detail(page, instance)
    expect(page.get_by_role("button", name="Start", exact=True)).to_be_disabled()
    for name in ("Stop", "Reboot", "Destroy…"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_enabled()


# --- the rest of the page ---------------------------------------------------------------------


def test_destroy_asks_for_confirmation_first(page: Page, served: Served, client: Client) -> None:
    """Destroy opens a confirmation dialog: cancelling leaves the instance running, confirming
    destroys it (the row goes to ``terminated``)."""
    [instance] = launch(client, 1)
    sign_in(page, served)
    expect(state_of(page, instance)).to_have_text("running", timeout=SETTLE)
    open_detail(page, instance)
    dialog = page.get_by_role("dialog")
    page.get_by_role("button", name="Destroy…").click()
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert client.get(instance).state == "running"
    page.get_by_role("button", name="Destroy…").click()
    dialog.get_by_role("button", name="Destroy", exact=True).click()
    expect(state_of(page, instance)).to_have_text("terminated", timeout=SETTLE)


def test_the_table_is_usable_from_the_keyboard(page: Page, served: Served, client: Client) -> None:
    """Rows are reached with Tab and the arrow keys, Enter opens a row's details, Escape closes
    them and gives the focus back to the row."""
    launch(client, 2)
    sign_in(page, served)
    rows = page.locator("#instances tbody button.open")
    expect(rows.nth(1)).to_be_visible(timeout=SETTLE)
    rows.first.focus()
    page.keyboard.press("ArrowDown")
    expect(rows.nth(1)).to_be_focused()
    second = rows.nth(1).evaluate("button => button.closest('tr').dataset.uuid")
    page.keyboard.press("Enter")
    expect(page.locator("#detail-title")).to_be_focused()
    expect(page.locator("#detail-fields")).to_contain_text(second)
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    expect(rows.nth(1)).to_be_focused()


def test_filters_and_search_narrow_the_table(page: Page, served: Served, client: Client) -> None:
    """The account filter keeps one account's instances; a search by UUID prefix keeps the
    one that matches."""
    [fast] = launch(client, 1)
    [slow] = launch(client, 1, account="slow")
    sign_in(page, served)
    expect(state_of(page, slow)).to_have_text("running", timeout=SETTLE)
    page.get_by_label("Account").select_option("slow")
    expect(page.locator(f'#instances tr[data-uuid="{fast}"]')).to_have_count(0)
    expect(page.locator(f'#instances tr[data-uuid="{slow}"]')).to_have_count(1)
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Search").fill(fast[:13])
    expect(page.locator("#instances tbody tr")).to_have_count(1)
    expect(page.locator(f'#instances tr[data-uuid="{fast}"]')).to_have_count(1)


def test_the_table_pages_through_many_instances_as_they_arrive(
    page: Page, served: Served, client: Client
) -> None:
    """150 instances launched while the page is open fill page 1 with 100 rows (the first 100
    by UUID, arriving live); Next shows the other 50 and Previous the first 100 again."""
    tag = uuid.uuid4().hex[:12]
    sign_in(page, served)
    page.get_by_label("Labels").fill(f"page={tag}")
    expect(page.locator("#instances-empty")).to_be_visible()
    uuids = sorted(launch(client, 150, page=tag))
    rows = page.locator("#instances tbody tr")

    def shown() -> list[str]:
        return list(rows.evaluate_all("rows => rows.map(row => row.dataset.uuid)"))

    expect(rows).to_have_count(100, timeout=SETTLE)
    expect(rows.last).to_have_attribute("data-uuid", uuids[99], timeout=SETTLE)
    assert shown() == uuids[:100]
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#page-info")).to_contain_text("Page 2")
    expect(rows).to_have_count(50)
    assert shown() == uuids[100:]
    page.get_by_role("button", name="Previous").click()
    expect(page.locator("#page-info")).to_contain_text("Page 1")
    expect(rows).to_have_count(100)
    assert still_the_same_page(page)


def test_the_overview_shows_the_fleet_and_its_machinery(
    page: Page, served: Served, client: Client, hooks: Hooks
) -> None:
    """The overview counts instances by state per account (a chart and a table), and lists the
    orders still launching, each subscription's delivery health (the one whose receiver fails
    has dead letters, the healthy one none), the realms, and the workers with their
    heartbeats."""
    launch(client, 1, hooked=hooks.label)
    slow_boot = {"path": str(served.home / "stuck-cloud.db"), "fast": True, "boot_seconds": 300.0}
    client.add_account("stuck", "simulator", config=slow_boot)
    launching = client.launch(
        account="stuck",
        image="img-web",
        hardware_profile="small",
        instances=[{"uuid": str(uuid.uuid4())} for _ in range(2)],
    )
    sign_in(page, served)
    page.get_by_role("button", name="Overview").click()
    counts = page.locator("#overview-states table")
    expect(counts.locator('tr[data-account="simulator"]')).to_be_visible(timeout=SETTLE)
    expect(page.locator("#overview-states svg[role=img]")).to_be_visible()
    expect(page.locator(f'#overview-orders tr[data-order="{launching.id}"]')).to_be_visible()
    health = page.locator("#overview-deliveries")
    dead = health.locator(f'tr[data-subscription="{hooks.failing}"] td[data-count="dead"]')
    expect(dead).to_have_text(re.compile(r"^[1-9]"), timeout=SETTLE)
    fine = health.locator(f'tr[data-subscription="{hooks.healthy}"] td[data-count="dead"]')
    expect(fine).to_have_text("0")
    expect(page.locator("#overview-realms")).to_contain_text("sim-a")
    expect(page.locator("#overview-workers")).to_contain_text("alive")


def test_an_instances_deliveries_are_shown_per_subscription(
    page: Page, served: Served, client: Client, hooks: Hooks
) -> None:
    """The detail panel lists, per subscription, the deliveries of that instance's events, and
    keeps them current: delivered to the healthy receiver, dead at the failing one."""
    [instance] = launch(client, 1, hooked=hooks.label)
    sign_in(page, served)
    # Earlier tests filled the shared server past one page (sorted by uuid): search for it.
    page.get_by_label("Search").fill(instance)
    expect(state_of(page, instance)).to_have_text("running", timeout=SETTLE)
    open_detail(page, instance)
    healthy = page.locator(f'#deliveries section[data-subscription="{hooks.healthy}"]')
    failing = page.locator(f'#deliveries section[data-subscription="{hooks.failing}"]')
    expect(healthy.locator('tr[data-status="delivered"]').first).to_be_visible(timeout=SETTLE)
    expect(failing.locator('tr[data-status="dead"]').first).to_be_visible(timeout=SETTLE)
    expect(healthy.locator("tr[data-status]")).not_to_have_count(0)
    assert still_the_same_page(page)


def test_the_page_loads_without_a_token_under_a_strict_policy(served: Served) -> None:
    """``/ui/`` is served without a token (the API calls need one), with a
    Content-Security-Policy that allows only this origin's own files; ``/`` leads to it."""
    page = httpx.get(f"{served.url}/ui/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert re.search(r"default-src 'self'", policy)
    assert "unsafe-inline" not in policy
    assert httpx.get(f"{served.url}/ui/app.js").headers["content-type"].split(";")[0] in {
        "text/javascript",
        "application/javascript",
    }
    assert httpx.get(f"{served.url}/", follow_redirects=True).url.path == "/ui/"
    assert httpx.get(f"{served.url}/v1/instances").status_code == 401


# --- issue 19: what an operator reads at a glance ----------------------------------------------

LINES_OF = """(cell) => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
}"""


def test_times_read_24_hour_with_dates_and_the_sign_in_note_goes(
    page: Page, served: Served, client: Client
) -> None:
    """Times in the table read ``YYYY-MM-DD HH:MM:SS`` (as the CLI's), and "Signed in." does
    not stay under the header: it is gone a few seconds later."""
    [instance] = launch(client, 1)
    sign_in(page, served)
    expect(page.locator("#status")).to_have_text("Signed in.")
    page.get_by_label("Search").fill(instance)
    changed = page.locator(f'#instances tr[data-uuid="{instance}"] [data-col="changed"]')
    expect(changed).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
    expect(page.locator("#status")).to_have_text("", timeout=8000)


def test_the_instance_list_shows_the_last_error(page: Page, served: Served, client: Client) -> None:
    """An instance whose launch failed shows why in the list's own "Last error" column."""
    order = client.launch(
        account="simulator",
        image="img-none",
        hardware_profile="small",
        instances=[{"uuid": str(uuid.uuid4())}],
    )
    instance = str(order.instances[0].uuid)
    sign_in(page, served)
    page.get_by_label("Search").fill(instance)
    expect(page.locator("#instances thead")).to_contain_text("Last error")
    error = page.locator(f'#instances tr[data-uuid="{instance}"] [data-col="error"]')
    expect(error).to_contain_text("img-none", timeout=SETTLE)


def test_the_labels_filter_shows_its_whole_placeholder(page: Page, served: Served) -> None:
    """The labels filter is wide enough for its placeholder, "role=web, env=prod"."""
    sign_in(page, served)
    fits = page.locator("#filter-label").evaluate(
        """(input) => {
          const style = getComputedStyle(input);
          const context = document.createElement("canvas").getContext("2d");
          context.font = `${style.fontSize} ${style.fontFamily}`;
          const room = input.clientWidth - parseFloat(style.paddingLeft)
            - parseFloat(style.paddingRight);
          return context.measureText(input.placeholder).width <= room;
        }"""
    )
    assert fits


def test_the_deliveries_table_keeps_its_words_whole(
    page: Page, served: Served, client: Client, hooks: Hooks
) -> None:
    """In the detail panel's deliveries, each event and each status stays on one line (no
    "delivere" / "d")."""
    [instance] = launch(client, 1, hooked=hooks.label)
    sign_in(page, served)
    page.get_by_label("Search").fill(instance)
    expect(state_of(page, instance)).to_have_text("running", timeout=SETTLE)
    open_detail(page, instance)
    healthy = page.locator(f'#deliveries section[data-subscription="{hooks.healthy}"]')
    expect(healthy.locator('tr[data-status="delivered"]').first).to_be_visible(timeout=SETTLE)
    page.locator("#deliveries").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#deliveries").screenshot(path=str(ARTIFACTS / "dashboard-deliveries.png"))
    cells = page.locator("#deliveries tbody tr td:nth-child(-n+3)")
    assert cells.count() > 0
    assert {cells.nth(i).evaluate(LINES_OF) for i in range(cells.count())} == {1}
