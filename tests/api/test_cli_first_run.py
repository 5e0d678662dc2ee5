"""What a new user meets first on the `uds` command: keys for the key-less tenant, key
listing, --version, flags and their choices, and one line (never a traceback) for any error. Torch-free."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import Settings
from cli.main import _parser, main
from tests.utils.factories import chat_rows, jsonl, upload
from uds.config import TrainConfig

LOCAL = "http://127.0.0.1:8000"


def test_keys_create_without_tenant_on_loopback_is_the_keyless_tenants_key(database_url, tmp_path, capsys):
    from cli.keys import keys_create

    settings = Settings(database_url=database_url, data_dir=tmp_path, host="127.0.0.1", local_tenant="local-first-run")
    assert keys_create(None, settings=settings) == 0
    key = capsys.readouterr().out.strip()
    with TestClient(create_app(settings), client=("127.0.0.1", 50000), base_url=LOCAL) as client:
        # A dataset uploaded with the key is the key-less dashboard's too: one tenant.
        made = upload(client, key, jsonl(chat_rows(12)))
        listed = client.get("/api/v1/datasets").json()["data"]
    assert made.json()["id"] in [d["id"] for d in listed]


def test_keys_create_without_tenant_where_keys_are_required_says_to_give_one(database_url, tmp_path, capsys):
    from cli.keys import keys_create

    settings = Settings(database_url=database_url, data_dir=tmp_path, host="0.0.0.0")
    assert keys_create(None, settings=settings) == 2
    assert "--tenant" in capsys.readouterr().err


def test_keys_list_shows_prefix_tenant_and_status_never_the_key(database_url, tmp_path, capsys):
    from cli.keys import keys_create, keys_list, keys_revoke

    settings = Settings(database_url=database_url, data_dir=tmp_path)
    keys_create("list-tenant", name="laptop", settings=settings)
    key = capsys.readouterr().out.strip()
    keys_revoke(key, settings=settings)
    capsys.readouterr()
    assert keys_list(settings=settings) == 0
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if key[:10] in text)
    assert "list-tenant" in line and "laptop" in line and "revoked" in line
    assert key not in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("uds ")


def _train_help() -> str:
    train = _parser()._subparsers._group_actions[0].choices["train"]
    return train.format_help()


def test_every_train_option_has_help_and_every_choice_is_listed():
    parser = _parser()._subparsers._group_actions[0].choices["train"]
    by_dest = {action.dest: action for action in parser._actions}
    for spec in dataclasses.fields(TrainConfig):
        name = {"dataset_path": "dataset_path", "eval_dataset_path": "eval_dataset_path"}.get(spec.name, spec.name)
        action = by_dest[name]
        assert action.help, spec.name
        for choice in spec.metadata.get("choices") or ():
            assert choice in action.help, (spec.name, choice)
    assert "max_loss" in _train_help()


def test_every_option_of_every_command_has_help():
    def walk(parser):
        for action in parser._actions:
            if action.dest in ("help",):
                continue
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in action.choices.values():
                    yield from walk(sub)
            else:
                yield parser.prog, action

    for prog, action in walk(_parser()):
        if action.option_strings or action.dest not in ("command",):
            assert action.help, f"{prog} {action.dest}"


def test_gradient_checkpointing_is_a_flag():
    from cli.train import load_train_config

    parser = _parser()
    args = parser.parse_args(["train", "--data", "x.jsonl", "--gradient-checkpointing", "--max-steps", "2"])
    assert load_train_config(args).gradient_checkpointing is True
    args = parser.parse_args(["train", "--data", "x.jsonl", "--group-by-length", "false"])
    assert load_train_config(args).group_by_length is False


def test_any_error_of_a_command_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    import cli.keys

    def broken(*args, **kwargs):
        raise RuntimeError("database is locked\n  (background on this error at: https://sqlalche.me/e/20/e3q8)")

    monkeypatch.setattr(cli.keys, "keys_list", broken)
    assert main(["keys", "list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "database is locked" in err


def test_migrating_logs_no_alembic_plugin_lines(tmp_path):
    import subprocess
    import sys

    # A fresh process, as `uds serve` is: alembic logs its plugins when first imported.
    code = (
        "import logging; logging.basicConfig(level=logging.INFO); from api.db import migrate; "
        f"migrate('sqlite:///{tmp_path / 'fresh.db'}')"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stderr
    assert "plugin" not in err
    assert "0001" in err  # the migrations' own lines stay


def test_demo_logs_dashboard_links(monkeypatch, caplog):
    import logging

    import cli.demo as demo
    from api.settings import Settings

    class Answer:
        def __init__(self, body):
            self.body = body

        def json(self):
            return self.body

    class Client:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def post(self, path, **kwargs):
            posted.append(kwargs.get("json"))
            return Answer({"id": "file-1"} if path.endswith("datasets") else {"id": "ftjob-1"})

    import httpx

    monkeypatch.setattr(httpx, "Client", Client)
    monkeypatch.setattr(demo, "wait_until_up", lambda base: None)
    caplog.set_level(logging.INFO, logger="uds.demo")
    posted: list = []
    demo.submit_demo_jobs(Settings(host="127.0.0.1", port=8123))
    # By default the demo trains the built-in real model, so Try it answers like a chat model.
    assert [body["model"] for body in posted if body] == ["smollm2-135m-instruct"] * 2
    lines = [r.getMessage() for r in caplog.records]
    assert any("http://127.0.0.1:8123/#/jobs/ftjob-1" in line for line in lines)
    assert not any("/api/v1/jobs/" in line for line in lines)
