"""The plugin inside a real Airflow API server: Airflow's authentication in front of the
pages and the JSON API, the API the review page uses, and the read-only platform views."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.review.conftest import seed_dataset
from train_platform.datasets import open_dataset

pytestmark = pytest.mark.slow
P = "/train-platform"


def page_state(client, name, branch="main"):
    answer = client.get(f"{P}/api/datasets/{name}/review", params={"branch": branch})
    assert answer.status_code == 200, answer.text
    return answer.json()


def post_review(client, name, state, decisions, branch="main"):
    return client.post(f"{P}/api/datasets/{name}/review", json={
        "branch": branch, "review_snapshot": state["review_snapshot"], "branch_snapshot": state["branch_snapshot"],
        "decisions": decisions})


def test_the_plugin_is_mounted_and_in_airflows_navigation(airflow_server):
    with airflow_server.client("alice") as client:
        plugins = client.get("/api/v2/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "train_platform_ui")
    assert [a["url_prefix"] for a in ours["fastapi_apps"]] == [P]
    views = {v["name"]: v for v in ours["external_views"]}
    assert views["Review data"]["href"] == f"{P}/review" and views["Review data"]["url_route"] == "tp-review"
    assert {v["category"] for v in views.values()} == {"Train platform"} and set(views) == {"Review data", "Datasets", "Models"}


def test_an_anonymous_caller_gets_401_from_the_api_and_the_login_page_from_a_page(airflow_server, served):
    with airflow_server.client(None) as client:
        for path in ("/api/me", "/api/datasets", f"/api/datasets/{served.name}/review"):
            answer = client.get(P + path)
            assert answer.status_code == 401 and answer.json()["detail"] == "Not authenticated", path
        refused = client.post(f"{P}/api/datasets/{served.name}/review", json={
            "branch": "main", "review_snapshot": "1", "decisions": [{"sample_id": "new-000", "action": "accept"}]})
        assert refused.status_code == 401
        page = client.get(f"{P}/review", params={"dataset": served.name})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/auth/login?next=")
        assert "train-platform%2Freview" in page.headers["location"]
        assert client.get(f"{P}/api/me", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 403
    assert "user/anonymous" not in open_dataset(served.name, user="alice", settings=served.settings).refs()


def test_the_user_comes_from_airflows_token_never_from_the_request(airflow_server):
    token = airflow_server.token("bob")
    with airflow_server.client(None) as client:
        by_cookie = client.get(f"{P}/api/me", cookies={"_token": token},
                               headers={"X-User": "alice", "Remote-User": "alice"}, params={"user": "alice"})
        assert by_cookie.status_code == 200 and by_cookie.json()["user"] == "bob"
        by_bearer = client.get(f"{P}/api/me", headers={"Authorization": f"Bearer {token}"})
        assert by_bearer.json()["user"] == "bob"


def test_openapi_documents_the_api(airflow_server):
    with airflow_server.client(None) as client:
        spec = client.get(f"{P}/openapi.json").json()
        docs = client.get(f"{P}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = spec["paths"]
    assert {"get", "post"} <= set(paths["/api/datasets/{name}/review"])
    for path in ("/api/datasets", "/api/datasets/{name}", "/api/datasets/{name}/review/accept-above",
                 "/api/datasets/{name}/samples/{sample_id}/plot.svg", "/api/models", "/api/models/{name}"):
        assert path in paths, path
    assert {"HTTPBearer", "APIKeyCookie"} <= set(spec["components"]["securitySchemes"])
    assert "/review" not in paths, "pages stay out of the API's documentation"


def test_the_review_api_round_trip(airflow_server, served):
    p = served.pending
    with airflow_server.client("bob") as client:
        state = page_state(client, served.name)
        assert (state["total"], state["role"], state["can_label"], state["branch_snapshot"]) == (6, "writer", True, None)
        assert isinstance(state["review_snapshot"], str), "64-bit snapshot ids travel as text"
        answer = post_review(client, served.name, state, [
            {"sample_id": p[0], "action": "accept"}, {"sample_id": p[1], "action": "correct", "label": "standing"},
            {"sample_id": p[2], "action": "reject"}, {"sample_id": p[3], "action": "skip"}])
        assert answer.status_code == 200, answer.text
        assert answer.json()["branch"] == "user/bob" and answer.json()["corrected"] == {p[1]: "standing"}
        after = page_state(client, served.name)
    assert after["reviewed_by_me"] == 3 and after["branch_snapshot"] == answer.json()["snapshot_id"]
    rows = {r["sample_id"]: r for r in open_dataset(served.name, user="alice", settings=served.settings)
            .read("user/bob").to_pylist()}
    assert (rows[p[1]]["label"], rows[p[1]]["annotator"], rows[p[1]]["status"]) == ("standing", "bob", "confirmed")
    assert p[2] not in rows


def test_bad_input_gets_a_clear_status_and_message_and_writes_nothing(airflow_server, served):
    name, p = served.name, served.pending
    with airflow_server.client("bob") as client:
        state = page_state(client, name)
        cases = [
            (client.get(f"{P}/api/datasets/nope/review"), 404, "DatasetNotFoundError", "no dataset named 'nope'"),
            (client.get(f"{P}/api/datasets/{name}/review", params={"branch": "ghost"}), 404, "RefNotFoundError",
             "review branch 'ghost' does not exist"),
            (post_review(client, name, state, [{"sample_id": p[0], "action": "correct", "label": "flying"}]), 422,
             "UnknownLabelError", "not in the label set"),
            (post_review(client, name, state, [{"sample_id": "rec-001", "action": "accept"}]), 422, "NotInBatchError",
             "not awaiting review there: rec-001"),
            (post_review(client, name, {**state, "review_snapshot": "42"}, [{"sample_id": p[0], "action": "accept"}]),
             422, "InvalidDecisionError", "does not exist"),
        ]
        for answer, status, error, text in cases:
            assert answer.status_code == status, answer.text
            assert answer.json()["error"] == error and text in answer.json()["detail"]
        malformed = post_review(client, name, state, [{"sample_id": p[0], "action": "approve"}])
        assert malformed.status_code == 422 and "accept" in json.dumps(malformed.json()["detail"])
        # What a form on another site could send with the login cookie: not JSON, refused.
        body = json.dumps({"branch": "main", "review_snapshot": state["review_snapshot"],
                           "decisions": [{"sample_id": p[0], "action": "accept"}]})
        as_form = client.post(f"{P}/api/datasets/{name}/review", content=body, headers={"Content-Type": "text/plain"})
        assert as_form.status_code == 422
    assert "user/bob" not in open_dataset(name, user="alice", settings=served.settings).refs()


def test_a_stale_page_gets_409_naming_the_samples(airflow_server, served):
    p = served.pending
    with airflow_server.client("bob") as client:
        old = page_state(client, served.name)
        assert post_review(client, served.name, old, [{"sample_id": p[0], "action": "accept"}]).status_code == 200
        stale = post_review(client, served.name, old, [{"sample_id": p[0], "action": "correct", "label": "running"}])
    assert stale.status_code == 409 and stale.json()["ids"] == [p[0]]
    assert "reload the page" in stale.json()["detail"]
    rows = {r["sample_id"]: r for r in open_dataset(served.name, user="alice", settings=served.settings)
            .read("user/bob").to_pylist()}
    assert rows[p[0]]["label"] == served.model_labels[p[0]]


def test_a_reader_can_look_but_not_label(airflow_server, served):
    with airflow_server.client("carol") as client:
        state = page_state(client, served.name)
        assert state["role"] == "reader" and not state["can_label"] and state["total"] == 6
        refused = post_review(client, served.name, state, [{"sample_id": served.pending[0], "action": "accept"}])
        bulk = client.post(f"{P}/api/datasets/{served.name}/review/accept-above",
                           json={"branch": "main", "review_snapshot": state["review_snapshot"], "min_confidence": 0.5})
        page = client.get(f"{P}/review", params={"dataset": served.name})
    assert refused.status_code == 403 and "review needs writer" in refused.json()["detail"]
    assert bulk.status_code == 403
    assert page.status_code == 200 and "you can look but not label" in page.text
    assert page.text.count('data-action="accept" disabled') == 6


def test_accept_above_a_confidence_through_the_api(airflow_server, served):
    with airflow_server.client("bob") as client:
        state = page_state(client, served.name)
        answer = client.post(f"{P}/api/datasets/{served.name}/review/accept-above", json={
            "branch": "main", "review_snapshot": state["review_snapshot"], "branch_snapshot": None,
            "min_confidence": 0.85})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == [i for i in served.pending if served.confidence[i] >= 0.85]


def test_conflicts_show_in_the_api_and_on_the_page(airflow_server, served):
    p = served.pending
    for who, label in (("alice", "standing"), ("bob", None)):
        with airflow_server.client(who) as client:
            decision = {"sample_id": p[1], "action": "correct", "label": label} if label else {"sample_id": p[1], "action": "accept"}
            assert post_review(client, served.name, page_state(client, served.name), [decision]).status_code == 200
    with airflow_server.client("carol") as client:
        conflicts = client.get(f"{P}/api/datasets/{served.name}/review/conflicts").json()
        page = client.get(f"{P}/review", params={"dataset": served.name})
    assert list(conflicts["disagreements"]) == [p[1]]
    assert conflicts["disagreements"][p[1]]["alice"]["label"] == "standing"
    assert "Reviewers disagree on 1 sample(s)" in page.text
    assert f"alice: corrected to standing · bob: accepted {served.model_labels[p[1]]}" in page.text


def test_the_page_and_its_plot(airflow_server, served):
    with airflow_server.client("alice") as client:
        page = client.get(f"{P}/review", params={"dataset": served.name, "limit": 4})
        unknown = client.get(f"{P}/review", params={"dataset": "nope"})
        svg = client.get(f"{P}/api/datasets/{served.name}/samples/{served.pending[0]}/plot.svg")
        missing = client.get(f"{P}/api/datasets/{served.name}/samples/ghost/plot.svg")
        script = client.get(f"{P}/static/review.js")
    assert page.status_code == 200 and page.text.count("<article") == 4 and page.text.count("<polyline") >= 12
    assert "0</strong> of <strong>6</strong> reviewed by you" in page.text
    assert 'href="/train-platform/review?' in page.text and "Next" in page.text
    assert "https://" not in page.text.split("</header>")[1], "nothing loads from elsewhere"
    assert unknown.status_code == 404 and "no dataset named &#39;nope&#39;" in unknown.text
    assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.count("<polyline") == 3
    assert missing.status_code == 404 and missing.json()["error"] == "UnknownSamplesError"
    assert script.status_code == 200 and "fetch(" in script.text


def test_the_dataset_views(airflow_server, served):
    with airflow_server.client("bob") as client:
        state = page_state(client, served.name)
        post_review(client, served.name, state, [{"sample_id": served.pending[0], "action": "accept"}])
        listed = client.get(f"{P}/api/datasets").json()
        view = client.get(f"{P}/api/datasets/{served.name}").json()
        html = client.get(f"{P}/datasets/{served.name}")
    assert {"name": served.name, "role": "writer"} in listed
    branches = {b["name"]: b for b in view["branches"]}
    assert branches["main"]["pending"] == 6 and branches["main"]["samples"] == 12
    assert branches["user/bob"]["user_branch"] and branches["user/bob"]["operation"] == "review"
    assert view["latest"]["operation"] == "append" and view["role"] == "writer"
    assert [a["operation"] for a in view["audit"][:1]] == ["review"]
    assert html.status_code == 200 and "Audit" in html.text and "user/bob" in html.text
    with airflow_server.client("carol") as client:
        stranger = seed_dataset(airflow_server.settings, readers=())
        assert client.get(f"{P}/api/datasets/{stranger.name}").status_code == 403


def _checkpoint(folder, labels):
    folder.mkdir(parents=True)
    weights = folder / "model.pt"
    weights.write_bytes(b"weights of a test model " + folder.name.encode())
    meta = {"format_version": 1, "task": "classification", "labels": labels, "model_config": {}, "normalization": {},
            "weights": "model.pt", "complete": True,
            "files": {"model.pt": hashlib.sha256(weights.read_bytes()).hexdigest()}}
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    return folder


def test_the_model_views(airflow_server, tmp_path):
    from train_platform.registry import ModelRegistry

    registry = ModelRegistry(airflow_server.settings)
    name = f"m-{tmp_path.name[-8:].replace('_', '-').lower()}"
    first = registry.register(name, _checkpoint(tmp_path / "v1", ["a", "b"]), metrics={"accuracy": 0.91},
                              gate_status="passed", actor="alice")
    second = registry.register(name, _checkpoint(tmp_path / "v2", ["a", "b"]), metrics={"accuracy": 0.95},
                               gate_status="passed", parent_version=first.version, actor="alice")
    third = registry.register(name, _checkpoint(tmp_path / "v3", ["a", "b"]), metrics={"accuracy": 0.62},
                              gate_status="failed", parent_version=first.version, actor="alice",
                              gate_detail={"passed": False, "reasons": ["accuracy 0.62 is below the floor 0.7"]})
    registry.promote(name, first.version, actor="alice", reason="first")
    registry.start_experiment(name, second.version, weight=0.2, actor="alice")
    with airflow_server.client("carol") as client:
        listed = client.get(f"{P}/api/models").json()
        view = client.get(f"{P}/api/models/{name}").json()
        html = client.get(f"{P}/models/{name}")
        unknown = client.get(f"{P}/api/models/nope")
    assert {"name": name, "aliases": {"production": 1, "candidate": 2}, "versions": 3, "latest": 3} in listed
    assert view["ab_split"]["candidate_version"] == 2 and view["ab_split"]["candidate_weight"] == 0.2
    assert [v["version"] for v in view["versions"]] == [3, 2, 1]
    assert view["versions"][0]["gate_status"] == "failed" and view["versions"][1]["gate_status"] == "passed"
    assert view["versions"][1]["metrics"] == {"accuracy": 0.95} and view["live"]["production"]["requests"] == 0
    assert third.version == 3 and "failed: accuracy 0.62 is below the floor 0.7" in html.text
    assert {e["kind"] for e in view["history"]} >= {"register", "promote", "ab_start"}
    assert html.status_code == 200 and "gets 80% of the traffic" in html.text and "accuracy: 0.95" in html.text
    assert unknown.status_code == 404 and unknown.json()["error"] == "ModelNotFoundError"


def test_the_models_alternatives_in_the_api_and_on_the_page_and_a_correction_may_pick_one(airflow_server, served):
    """Each sample carries the model's runners-up; picking one is a correction, allowed even
    for a label the dataset has no confirmed sample of, but only on the sample the model
    proposed it for."""
    p = served.pending
    ds = open_dataset(served.name, user="alice", settings=served.settings)
    ds.annotate([{"sample_id": p[0], "alternatives": [{"label": "jumping", "probability": 0.04}]}], "main",
                message="a runner-up the dataset has no sample of")
    with airflow_server.client("bob") as client:
        state = page_state(client, served.name)
        by_id = {s["sample_id"]: s for s in state["samples"]}
        assert by_id[p[1]]["alternatives"] == served.alternatives[p[1]]
        assert by_id[p[0]]["alternatives"] == [{"label": "jumping", "probability": 0.04}]
        assert "jumping" in state["labels"]
        page = client.get(f"{P}/review", params={"dataset": served.name})
        refused = post_review(client, served.name, state, [{"sample_id": p[1], "action": "correct", "label": "jumping"}])
        answer = post_review(client, served.name, state, [
            {"sample_id": p[0], "action": "correct", "label": "jumping"},
            {"sample_id": p[1], "action": "correct", "label": served.alternatives[p[1]][1]["label"]}])
    first = served.alternatives[p[1]][0]
    assert f'aria-label="Pick {first["label"]} ({first["probability"] * 100:.0f}%)"' in page.text
    assert 'aria-label="Pick jumping (4%)"' in page.text
    assert refused.status_code == 422 and "jumping" in refused.json()["detail"]
    assert answer.status_code == 200, answer.text
    rows = {r["sample_id"]: r for r in ds.read("user/bob").to_pylist()}
    assert (rows[p[0]]["label"], rows[p[0]]["label_source"], rows[p[0]]["status"]) == ("jumping", "human", "confirmed")
    assert rows[p[1]]["label"] == served.alternatives[p[1]][1]["label"]
    assert not rows[p[0]]["alternatives"] and rows[p[0]]["confidence"] is None


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory, s3_endpoint):
    """An Airflow API server with the plugin whose warehouse is on the S3 endpoint."""
    import uuid

    import boto3

    from tests.review.airflow_server import AirflowServer

    bucket = f"tp-review-raw-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    server = AirflowServer(tmp_path_factory.mktemp("review-s3"), extra_env={
        "TP_WAREHOUSE": f"s3://{bucket}/warehouse", "TP_S3_ENDPOINT": s3_endpoint, "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}).start()
    server.bucket = bucket
    try:
        yield server
    finally:
        server.stop()


def test_a_sample_stored_in_object_storage_links_to_its_raw_file(s3_server, s3_endpoint, monkeypatch):
    """A pending sample whose series is a file in the warehouse's bucket on the S3 endpoint
    (``series_uri``): the API and the page give a presigned link, and the link downloads
    that file."""
    import io

    import boto3
    import httpx
    import numpy as np

    from train_platform.datasets import build_samples

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):  # this process writes there too
        monkeypatch.setenv(key, s3_server.extra_env[key])
    settings = s3_server.settings
    seeded = seed_dataset(settings, pending=2)
    bucket, key = s3_server.bucket, "warehouse/raw/far away.npy"
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((500, 3), dtype=np.float32))
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    uri = f"s3://{bucket}/{key}"
    ds = open_dataset(seeded.name, user="alice", settings=settings)
    ds.append(build_samples(["far-000"], [None], series_uri=[uri], n_channels=[3], labels=["running"],
                            label_source="model", confidence=[0.5], status="pending"), "main", message="a big one")
    with s3_server.client("bob") as client:
        state = page_state(client, seeded.name)
        page = client.get(f"{P}/review", params={"dataset": seeded.name})
    far = next(s for s in state["samples"] if s["sample_id"] == "far-000")
    assert far["series_uri"] == uri
    assert far["raw_url"].startswith(f"{s3_endpoint}/{bucket}/warehouse/raw/far%20away.npy?")
    assert "X-Amz-Signature=" in far["raw_url"] and "X-Amz-Expires=3600" in far["raw_url"]
    assert httpx.get(far["raw_url"], timeout=10).content == buffer.getvalue()
    assert 'aria-label="Download the raw file of far-000"' in page.text and f">{uri}</a>" in page.text
    assert all(s["raw_url"] is None for s in state["samples"] if s["sample_id"] != "far-000")
