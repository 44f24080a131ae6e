"""The review page in a real browser: Debian's Chromium driven by playwright (no browser
download), against the real Airflow API server of the session, logged in through Airflow's
own login page.

Set ``TP_REVIEW_SCREENSHOT=PATH`` to also save the screenshot of the page with decisions
pending to PATH (``docs/review-page.png`` was made that way)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from train_platform.datasets import open_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow]
P = "/train-platform"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: scripts/install-system.sh installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


def login(browser, server, user: str, url: str):
    """A fresh browser session that asks for ``url``, lands on Airflow's login page, signs in
    as ``user`` and comes back to ``url``."""
    context = browser.new_context(viewport={"width": 1200, "height": 1500})
    page = context.new_page()
    page.goto(server.url + url)
    page.wait_for_url(re.compile(r".*/auth/login\?next="))
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(server.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(server.url + P) + r"/review.*"))
    return page


def sample(page, sample_id: str):
    return page.get_by_role("article", name=sample_id)


def main_rows(seeded, ref="main"):
    return {r["sample_id"]: r for r in open_dataset(seeded.name, user="alice", settings=seeded.settings).read(ref).to_pylist()}


def test_review_a_batch_and_find_exactly_those_labels_in_the_dataset(browser, airflow_server, served, tmp_path):
    import json

    from train_platform.review.journal import ReviewJournal
    from train_platform.review.submit import submit_review
    from train_platform.review.batches import load_batch

    p = served.pending
    # The review step names a check report; alice has already reviewed one sample.
    report = tmp_path / "check"
    report.mkdir()
    (report / "check.json").write_text(json.dumps({"score": 0.9, "passed": False, "checks": [], "label_issues": [
        {"sample_id": p[3], "given": served.model_labels[p[3]], "suggested": "standing", "confidence": 0.88}]}))
    ReviewJournal(served.settings.catalog_uri).open_request(
        dataset=served.name, review_branch="main", batch_id=None, allow_new_classes=False, check_report=str(report),
        dag_id="sensor-continual-learning", run_id="manual__1", task_id="review", created_by="alice")
    alice = load_batch(served.name, "main", reviewer="alice", settings=served.settings)
    submit_review(served.name, "main", [{"sample_id": p[3], "action": "accept"}], reviewer="alice",
                  review_snapshot=alice.review_snapshot, branch_snapshot=None, settings=served.settings)
    page = login(browser, airflow_server, "bob", f"{P}/review?dataset={served.name}&branch=main")
    assert "looks wrong; the check suggests 'standing' (88%)" in sample(page, p[3]).inner_text()
    assert f"Other reviewers: alice accepted {served.model_labels[p[3]]}" in sample(page, p[3]).inner_text()
    assert page.get_by_text("signed in as").inner_text() == "signed in as bob"
    progress = page.locator("#tp-progress")
    assert "0 of 6 reviewed by you" in progress.inner_text()
    assert page.locator("svg.tp-plot polyline").count() == 18
    # accept three (one with the keyboard), correct one, reject one; p[5] stays undecided
    sample(page, p[0]).get_by_role("button", name="Accept").click()
    sample(page, p[1]).get_by_role("button", name="Accept").click()
    sample(page, p[2]).focus()
    page.keyboard.press("a")
    sample(page, p[3]).get_by_label("Label").select_option("standing")
    sample(page, p[4]).get_by_role("button", name="Reject").click()
    assert sample(page, p[3]).get_by_text("Pending: correct to standing").is_visible()
    assert sample(page, p[4]).get_by_text("Pending: reject as a bad sample").is_visible()
    assert page.locator("#tp-pending-count").inner_text() == "5 decisions pending"
    shot = tmp_path / "review-page.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot), full_page=False)
    if os.environ.get("TP_REVIEW_SCREENSHOT"):
        shutil.copy(shot, os.environ["TP_REVIEW_SCREENSHOT"])
    page.get_by_role("button", name="Submit").click()
    status = page.get_by_role("status")
    status.filter(has_text="Submitted to user/bob").wait_for()
    assert status.inner_text() == "Submitted to user/bob: 3 accepted, 1 corrected, 1 rejected."
    assert "5 of 6 reviewed by you" in progress.inner_text()
    conflicts = page.get_by_role("table", name="Disagreements")
    assert f"alice: accepted {served.model_labels[p[3]]} · bob: corrected to standing" in conflicts.inner_text()
    assert sample(page, p[3]).get_by_text("Your decision: corrected to standing").is_visible()
    bob = main_rows(served, "user/bob")
    expected = {p[0]: served.model_labels[p[0]], p[1]: served.model_labels[p[1]], p[2]: served.model_labels[p[2]],
                p[3]: "standing"}
    assert {i: bob[i]["label"] for i in expected} == expected
    assert {bob[i]["annotator"] for i in expected} == {"bob"}
    assert {(bob[i]["status"], bob[i]["label_source"]) for i in expected} == {("confirmed", "human")}
    assert p[4] not in bob and bob[p[5]]["status"] == "pending" and bob[p[5]]["annotator"] is None
    changed = {i for i, row in bob.items() if row["annotator"] is not None}
    assert changed == set(expected), "nothing else was labelled"
    page.context.close()


def test_an_anonymous_request_is_refused(browser, airflow_server, served):
    context = browser.new_context()
    page = context.new_page()
    answer = page.goto(f"{airflow_server.url}{P}/api/datasets/{served.name}/review")
    assert answer.status == 401 and "Not authenticated" in page.content()
    page.goto(f"{airflow_server.url}{P}/review?dataset={served.name}")
    assert "/auth/login?next=" in page.url
    assert page.get_by_role("button", name="Sign in").is_visible()
    assert page.get_by_role("article").count() == 0
    context.close()


def test_a_reader_cannot_submit(browser, airflow_server, served):
    page = login(browser, airflow_server, "carol", f"{P}/review?dataset={served.name}")
    assert "you can look but not label" in page.get_by_role("note").first.inner_text()
    first = sample(page, served.pending[0])
    assert first.get_by_role("button", name="Accept").is_disabled()
    assert first.get_by_label("Label").is_disabled()
    assert page.get_by_role("button", name="Submit").is_disabled()
    # Sending the decision anyway, with the reader's own login, is refused by the server.
    status = page.evaluate("""async ([api, name, id]) => {
        const form = document.getElementById("tp-review");
        const r = await fetch(api + "/datasets/" + name + "/review", {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({branch: "main", review_snapshot: form.dataset.reviewSnapshot,
                                  decisions: [{sample_id: id, action: "accept"}]})});
        return [r.status, (await r.json()).detail];
    }""", [f"{P}/api", served.name, served.pending[0]])
    assert status[0] == 403 and "review needs writer" in status[1]
    refs = open_dataset(served.name, user="alice", settings=served.settings).refs()
    assert "user/carol" not in refs
    page.context.close()


def test_a_stale_page_and_an_unknown_branch_say_so_on_the_page(browser, airflow_server, served):
    p = served.pending
    url = f"{P}/review?dataset={served.name}"
    first = login(browser, airflow_server, "bob", url)
    second = first.context.new_page()
    second.goto(airflow_server.url + url)
    sample(first, p[0]).get_by_role("button", name="Accept").click()
    first.get_by_role("button", name="Submit").click()
    first.get_by_role("status").filter(has_text="Submitted").wait_for()
    sample(second, p[0]).get_by_label("Label").select_option("running")
    second.keyboard.press("Control+Enter")
    alert = second.get_by_role("alert")
    alert.wait_for()
    assert f"changed since the page was loaded, for sample(s) {p[0]}" in alert.inner_text()
    assert "reload the page" in alert.inner_text()
    assert main_rows(served, "user/bob")[p[0]]["label"] == served.model_labels[p[0]]
    page = first.context.new_page()
    page.goto(airflow_server.url + f"{P}/review?dataset={served.name}&branch=nowhere")
    assert "review branch 'nowhere' does not exist" in page.get_by_role("alert").inner_text()
    first.context.close()


def test_the_page_is_in_airflows_navigation(browser, airflow_server, served):
    page = login(browser, airflow_server, "alice", f"{P}/review?dataset={served.name}")
    page.goto(airflow_server.url + "/plugin/tp-review")
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="Review pre-labels").wait_for()
    assert frame.get_by_text("signed in as").inner_text() == "signed in as alice"
    page.context.close()


def test_a_reviewer_picks_one_of_the_models_alternatives_with_a_click_or_its_number_key(browser, airflow_server, served):
    p, alt = served.pending, served.alternatives
    page = login(browser, airflow_server, "bob", f"{P}/review?dataset={served.name}&branch=main")
    first = sample(page, p[0])
    alternatives = first.get_by_role("list", name=f"The model's alternatives for {p[0]}")
    assert alternatives.get_by_role("listitem").count() == 2
    assert f"{alt[p[0]][0]['label']} {alt[p[0]][0]['probability'] * 100:.0f}%" in alternatives.inner_text()
    first.get_by_role("button", name=f"Pick {alt[p[0]][1]['label']}").click()
    assert first.get_by_text(f"Pending: correct to {alt[p[0]][1]['label']}").is_visible()
    assert first.get_by_label("Label").input_value() == alt[p[0]][1]["label"]
    sample(page, p[1]).focus()
    page.keyboard.press("1")  # the first alternative of the focused sample; focus moves on
    assert sample(page, p[1]).get_by_text(f"Pending: correct to {alt[p[1]][0]['label']}").is_visible()
    page.keyboard.press("2")
    assert sample(page, p[2]).get_by_text(f"Pending: correct to {alt[p[2]][1]['label']}").is_visible()
    page.keyboard.press("9")  # no ninth alternative: nothing happens
    assert sample(page, p[3]).locator("[data-role=pending]").inner_text() == ""
    page.get_by_role("button", name="Submit").click()
    page.get_by_role("status").filter(has_text="Submitted to user/bob").wait_for()
    assert page.get_by_role("status").inner_text() == "Submitted to user/bob: 3 corrected."
    bob = main_rows(served, "user/bob")
    assert {i: bob[i]["label"] for i in p[:3]} == {
        p[0]: alt[p[0]][1]["label"], p[1]: alt[p[1]][0]["label"], p[2]: alt[p[2]][1]["label"]}
    assert {(bob[i]["annotator"], bob[i]["status"]) for i in p[:3]} == {("bob", "confirmed")}
    page.context.close()
