"""Who acts, and what they may do, on SQLite and on PostgreSQL: the OS user from the uid,
``--as`` and ``TP_USER`` reserved to a platform-admin (exit 2 for anyone else), the first
admin, bearer tokens with names and scopes, model roles (owner, maintainer, reader) on
every step, and pipeline activation by the pipeline's owner or an admin."""

from __future__ import annotations

import os
import pwd
import textwrap

import pytest

from train_platform.registry import AccessDeniedError, IdentityError, ModelRegistry, RoleError, identity
from train_platform.settings import Settings, parse_api_tokens

ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(params=["sqlite", "postgresql"])
def platform(request, tp_home, monkeypatch):
    """TP_HOME with the platform database on SQLite or on a fresh PostgreSQL database;
    settings re-read. Returns the database URL."""
    from train_platform.settings import reload_settings

    if request.param == "postgresql":
        monkeypatch.setenv("TP_DATABASE_URL", request.getfixturevalue("fresh_postgres"))
    monkeypatch.delenv("TP_USER", raising=False)
    return reload_settings().database_uri


def tp(capsys, *argv: str) -> tuple[int, str, str]:
    from train_platform.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def demote_me(url: str) -> None:
    """Make the OS user an ordinary user: another admin takes over, then revokes it."""
    identity.grant_admin("installer", actor=ME, database_url=url)
    identity.revoke_admin(ME, actor="installer", database_url=url)
    assert identity.list_admins(url) == ["installer"]


# ---------------------------------------------------------------- settings

def test_the_os_user_comes_from_the_uid_never_from_the_environment(monkeypatch):
    for var in ("USER", "LOGNAME", "USERNAME"):
        monkeypatch.setenv(var, "mallory")
    settings = Settings.from_env({"TP_HOME": "/tmp/tp-identity"})
    assert settings.os_user == ME != "mallory"
    assert settings.user == ME and settings.requested_user is None
    asked = Settings.from_env({"TP_HOME": "/tmp/tp-identity", "TP_USER": "alice"})
    assert (asked.os_user, asked.requested_user, asked.user) == (ME, "alice", "alice")


def test_api_tokens_carry_a_name_and_scopes():
    clients = parse_api_tokens("labeller:predict+feedback=s3cr=t==, dashboard:predict=abc, legacy-token")
    assert [(c.name, sorted(c.scopes), c.token) for c in clients] == [
        ("labeller", ["feedback", "predict"], "s3cr=t=="), ("dashboard", ["predict"], "abc"),
        ("token-" + __import__("hashlib").sha256(b"legacy-token").hexdigest()[:8], ["feedback", "predict"],
         "legacy-token")]
    assert "s3cr" not in repr(clients[0])
    with pytest.raises(ValueError, match="token 'x' has unknown scope\\(s\\) admin"):
        parse_api_tokens("x:admin=t")
    with pytest.raises(ValueError, match="the name 'x' is given to two tokens"):
        parse_api_tokens("x:predict=a,x:feedback=b")
    settings = Settings.from_env({"TP_HOME": "/tmp/tp-identity", "TP_API_TOKENS": "labeller:feedback=tok-1,tok-2"})
    assert settings.api_tokens == ("tok-1", "tok-2")
    client = identity.authenticate_bearer(settings, "Bearer tok-1")
    assert client.name == "labeller" and identity.token_actor(client) == "token:labeller"
    assert identity.authenticate_bearer(settings, "bearer  tok-2 ").name.startswith("token-")
    for header in ("Bearer tok-3", "Basic tok-1", "tok-1", "", None, "Bearer "):
        assert identity.authenticate_bearer(settings, header) is None


# ---------------------------------------------------------------- platform-admin

def test_the_os_user_that_creates_the_platform_database_is_its_first_admin(platform):
    assert identity.list_admins(platform) == [ME]
    first = identity.audit_log(platform)[-1]
    assert (first.actor, first.action, first.subject) == (ME, "admin_grant", ME)
    assert first.detail == {"reason": "created the platform database"}


def test_only_an_admin_grants_the_role_and_the_last_admin_keeps_it(platform):
    with pytest.raises(RoleError, match=f"'{ME}' is the last platform-admin"):
        identity.revoke_admin(ME, actor=ME, database_url=platform)
    identity.grant_admin("alice", actor=ME, database_url=platform)
    with pytest.raises(AccessDeniedError, match="user 'bob' is not a platform-admin; admin grant needs that role"):
        identity.grant_admin("bob", actor="bob", database_url=platform)
    assert identity.list_admins(platform) == sorted(["alice", ME])
    identity.revoke_admin("alice", actor=ME, database_url=platform)
    demote_me(platform)
    entries = [(e.actor, e.action, e.subject) for e in identity.audit_log(platform)]
    assert ("bob", "denied", "admin grant bob") in entries
    assert ("installer", "admin_revoke", ME) in entries


def test_acting_as_another_user_is_reserved_to_admins(platform, capsys, monkeypatch):
    from train_platform.settings import reload_settings

    assert identity.acting_user(requested="alice") == "alice"  # the OS user is the first admin
    assert identity.acting_user(requested=ME) == ME
    demote_me(platform)
    with pytest.raises(IdentityError, match=f"--as alice: acting as another user is reserved to the platform-admin "
                                            f"role, which OS user '{ME}' does not hold"):
        identity.acting_user(requested="alice")
    assert identity.acting_user(requested=ME) == ME  # naming oneself needs no role

    code, _, err = tp(capsys, "model", "list", "anything", "--as", "alice")
    assert code == 2 and "--as alice: acting as another user is reserved to the platform-admin role" in err
    code, _, err = tp(capsys, "dataset", "import", "ds", "--from", "aeon:GunPoint:train", "--as", "alice")
    assert code == 2 and "reserved to the platform-admin role" in err
    assert tp(capsys, "dataset", "list")[1].strip() == "(no datasets)"  # nothing was created
    monkeypatch.setenv("TP_USER", "alice")
    reload_settings()
    code, _, err = tp(capsys, "model", "list", "anything")
    assert code == 2 and "TP_USER alice: acting as another user is reserved" in err
    code, _, err = tp(capsys, "admin", "grant", "alice")
    assert code == 5 and f"user '{ME}' is not a platform-admin" in err


def test_admin_commands(platform, capsys):
    import json

    code, out, _ = tp(capsys, "admin", "whoami", "--json")
    assert code == 0 and json.loads(out) == {"os_user": ME, "acts_as": ME, "platform_admin": True}
    assert tp(capsys, "admin", "grant", "alice")[0] == 0
    assert tp(capsys, "admin", "list")[1].split() == sorted(["alice", ME])
    assert tp(capsys, "admin", "revoke", "alice")[0] == 0
    code, out, _ = tp(capsys, "admin", "audit", "--json")
    assert [(e["actor"], e["action"], e["subject"]) for e in json.loads(out)][:2] == [
        (ME, "admin_revoke", "alice"), (ME, "admin_grant", "alice")]


# ---------------------------------------------------------------- model roles

def test_model_roles_decide_who_may_promote_roll_back_and_run_experiments(platform, checkpoints):
    alice = ModelRegistry(actor="alice")
    bob = ModelRegistry(actor="bob")
    alice.register("m", checkpoints["good"], gate_status="passed")
    alice.register("m", checkpoints["good"], gate_status="passed")
    assert alice.roles("m") == {"alice": "owner"}
    alice.promote("m", 1)

    denied = [
        ("promote", lambda: bob.promote("m", 2)),
        ("rollback", lambda: bob.rollback("m")),
        ("experiment", lambda: bob.start_experiment("m", 2, weight=0.2)),
        ("gate", lambda: bob.record_gate("m", 2, passed=False)),
        ("register", lambda: bob.register("m", checkpoints["good"])),
        ("grant", lambda: bob.grant("m", "bob", "owner")),
    ]
    for operation, step in denied:
        with pytest.raises(AccessDeniedError, match=f"user 'bob' has no role on model 'm'; {operation} needs") as exc:
            step()
        assert exc.value.exit_code == 5
    assert len(alice.list_versions("m")) == 2  # the refused registration left nothing
    refusals = [(e.actor, e.detail["operation"]) for e in alice.history("m") if e.kind == "denied"]
    assert refusals == [("bob", op) for op, _ in denied]

    alice.grant("m", "bob", "maintainer")
    exp = bob.start_experiment("m", 2, weight=0.2)
    assert exp.candidate_version == 2
    bob.end_experiment("m")
    bob.promote("m", 2)
    assert bob.rollback("m").version == 1
    with pytest.raises(AccessDeniedError, match="user 'bob' has role 'maintainer' on model 'm'; grant needs owner"):
        bob.grant("m", "carol", "reader")
    alice.grant("m", "carol", "reader")
    carol = ModelRegistry(actor="carol")
    assert carol.check_access("m", "list") == "carol"
    with pytest.raises(AccessDeniedError, match="has role 'reader' on model 'm'; promote needs maintainer"):
        carol.promote("m", 2)
    with pytest.raises(RoleError, match="'alice' is the last owner of model 'm'"):
        alice.grant("m", "alice", None)
    # A platform-admin holds every model role.
    ModelRegistry(actor=ME).promote("m", 2, reason="admin")

    actors = {e.actor for e in alice.history("m")}
    assert actors == {"alice", "bob", "carol", ME} and "anonymous" not in actors
    grants = [(e.actor, e.detail["user"], e.detail["role"]) for e in alice.history("m") if e.kind == "grant"]
    assert grants == [("alice", "bob", "maintainer"), ("alice", "carol", "reader")]


def test_a_web_client_acts_under_its_token_name(platform, checkpoints):
    settings = Settings.from_env({"TP_HOME": "/tmp/tp-identity", "TP_API_TOKENS": "labeller:feedback=tok"})
    client = identity.authenticate_bearer(settings, "Bearer tok")
    web = ModelRegistry(actor=identity.token_actor(client))
    owner = ModelRegistry(actor="alice")
    owner.register("m", checkpoints["good"], gate_status="passed")
    with pytest.raises(AccessDeniedError, match="user 'token:labeller' has no role on model 'm'"):
        web.promote("m", 1)
    owner.grant("m", "token:labeller", "maintainer")
    web.promote("m", 1, reason="from the labelling app")
    assert owner.history("m", alias="production")[-1].actor == "token:labeller"


def test_the_cli_records_the_os_user_and_checks_its_roles(platform, checkpoints, capsys):
    import json

    ckpt = str(checkpoints["good"])
    assert tp(capsys, "model", "register", "m", "--checkpoint", ckpt, "--gate", "passed")[0] == 0
    assert tp(capsys, "model", "register", "m", "--checkpoint", ckpt, "--gate", "passed", "--as", "alice")[0] == 5
    assert tp(capsys, "model", "grant", "m", "alice", "maintainer")[0] == 0
    assert tp(capsys, "model", "register", "m", "--checkpoint", ckpt, "--gate", "passed", "--as", "alice")[0] == 0
    assert tp(capsys, "model", "promote", "m", "2", "--as", "alice")[0] == 0
    assert tp(capsys, "model", "experiment", "set", "m", "1", "--weight", "0.3", "--as", "alice")[0] == 0
    code, _, err = tp(capsys, "model", "experiment", "clear", "m", "--as", "dave")
    assert code == 5 and "user 'dave' has no role on model 'm'; experiment needs maintainer" in err
    code, _, err = tp(capsys, "model", "list", "m", "--as", "dave")
    assert code == 5 and "list needs reader" in err
    code, out, _ = tp(capsys, "model", "roles", "m", "--json")
    assert json.loads(out) == {ME: "owner", "alice": "maintainer"}
    code, out, _ = tp(capsys, "model", "list", "m", "--json")
    assert [v["created_by"] for v in json.loads(out)] == [ME, "alice"]
    code, out, _ = tp(capsys, "model", "history", "m", "--json")
    events = json.loads(out)
    assert {e["actor"] for e in events} == {ME, "alice", "dave"}
    assert [(e["kind"], e["actor"]) for e in events if e["kind"] in ("promote", "ab_start", "denied")] == [
        ("denied", "alice"), ("promote", "alice"), ("promote", "alice"), ("ab_start", "alice"), ("denied", "dave"),
        ("denied", "dave")]


# ---------------------------------------------------------------- pipeline activation

PIPELINE = """\
    apiVersion: train-platform/v1
    kind: Pipeline
    metadata:
      name: owned
      version: "{version}"
      owner: {owner}
    spec:
      tasks:
        - name: only
          type: command
          command: ["python", "-c", "print('hi')"]
    """


def test_pipeline_activation_needs_the_owner_or_an_admin(platform, tmp_path, capsys):
    dags = tmp_path / "dags"
    dags.mkdir()
    for version in ("1.0.0", "1.1.0"):
        (dags / f"owned-{version}.yaml").write_text(textwrap.dedent(PIPELINE.format(version=version, owner="ml-team")))
    folder = ["--dags-folder", str(dags)]
    code, out, _ = tp(capsys, "pipeline", "activate", "owned", "1.0.0", *folder)  # an admin
    assert code == 0 and "version 1.0.0 is active" in out
    assert tp(capsys, "pipeline", "activate", "owned", "--latest", *folder, "--as", "ml-team")[0] == 0  # the owner
    code, _, err = tp(capsys, "pipeline", "activate", "owned", "1.0.0", *folder, "--as", "dave")
    assert code == 5 and "user 'dave' may not activate pipeline 'owned': activation needs its owner 'ml-team'" in err
    entries = [(e.actor, e.action, e.detail.get("version")) for e in identity.audit_log(platform)]
    assert entries[:3] == [("dave", "denied", "1.0.0"), ("ml-team", "pipeline_activate", "1.1.0"),
                           (ME, "pipeline_activate", "1.0.0")]

    demote_me(platform)
    code, _, err = tp(capsys, "pipeline", "activate", "owned", "1.0.0", *folder)
    assert code == 5 and f"user '{ME}' may not activate pipeline 'owned'" in err
    for version in ("1.0.0", "1.1.0"):  # now the OS user owns it
        (dags / f"owned-{version}.yaml").write_text(textwrap.dedent(PIPELINE.format(version=version, owner=ME)))
    assert tp(capsys, "pipeline", "activate", "owned", "1.0.0", *folder)[0] == 0
