"""The native job request and TrainConfig stay one set of settings, and a recipe resolves as TrainConfig does."""

from __future__ import annotations

import dataclasses

import pytest

from api.schemas import HOST_FIELDS, JobCreate
from tests.utils.factories import bearer, chat_rows, create_job, jsonl, upload
from uds.config import PAPER_RECIPE, TrainConfig

# JobCreate fields that are not TrainConfig settings: what the job trains on and how it is labelled.
REQUEST_ONLY = {"dataset_id", "eval_dataset_id", "name", "suffix", "metadata", "integrations"}


def test_every_train_config_setting_but_host_paths_is_a_request_field():
    settings = {f.name for f in dataclasses.fields(TrainConfig)} - set(HOST_FIELDS)
    fields = set(JobCreate.model_fields)
    assert settings - fields == set(), "TrainConfig settings the API refuses"
    assert fields - settings - REQUEST_ONLY == set(), "request fields that are no TrainConfig setting"


@pytest.fixture
def dataset(client, key):
    return upload(client, key, jsonl(chat_rows(20))).json()


def test_the_paper_recipe_resolves_with_given_settings_winning(client, key, dataset):
    # candidate_batch_size 8 equals the dataclass default: it still wins over the recipe's 4, because it was given.
    config = create_job(client, key, dataset["id"], recipe="paper", candidate_batch_size=8, max_steps=3).json()[
        "config"
    ]
    expected = TrainConfig.from_dict({"recipe": "paper", "candidate_batch_size": 8}).to_dict()
    for name in (
        "recipe",
        "candidate_batch_size",
        "budget",
        "train_batch_size",
        "group_by_length",
        "alpha",
        "lora_init",
        "loss_weighting",
        "lr_schedule",
        "learning_rate",
        "max_seq_len",
        "lora_targets",
    ):
        assert config[name] == expected[name], name
    assert config["recipe"] == "paper" and config["candidate_batch_size"] == 8 and config["max_steps"] == 3
    assert config["lora_init"] == PAPER_RECIPE["lora_init"] and config["loss_weighting"] == "example"

    plain = create_job(client, key, dataset["id"], recipe="paper").json()["config"]
    assert {name: plain[name] for name in PAPER_RECIPE} == PAPER_RECIPE


def test_new_settings_are_stored_and_shape_the_run(client, key, dataset):
    body = create_job(
        client,
        key,
        dataset["id"],
        alpha="paper",
        group_by_length=False,
        lora_init="default",
        loss_weighting="token",
        candidate_batch_size=4,
        groups_per_step=2,
        train_batch_size=16,
        budget=0.5,
    ).json()
    config = body["config"]
    assert (config["alpha"], config["group_by_length"], config["lora_init"], config["loss_weighting"]) == (
        "paper",
        False,
        "default",
        "token",
    )
    assert config["groups_per_step"] == 2 and config["train_batch_size"] == 16 and config["recipe"] is None
    assert body["progress"]["total_steps"] == 3  # 20 rows = 5 groups of 4, 2 groups a step


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"recipe": "official"}, "recipe"),
        ({"alpha": "papers"}, "alpha"),
        ({"groups_per_step": 0}, "groups_per_step"),
        ({"train_batch_size": -1}, "train_batch_size"),
        ({"lora_init": "zeros"}, "lora_init"),
        ({"loss_weighting": "sum"}, "loss_weighting"),
        ({"group_by_length": "sometimes"}, "group_by_length"),
    ],
)
def test_bad_new_settings_are_400_naming_the_field(client, key, dataset, fields, param):
    response = client.post(
        "/api/v1/jobs", headers=bearer(key), json={"dataset_id": dataset["id"], "model": "uds-tiny", **fields}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_the_openapi_schema_carries_each_settings_help_choices_and_default(client):
    from uds.config import setting_choices, setting_help

    spec = client.get("/openapi.json").json()
    properties = spec["components"]["schemas"]["JobCreate"]["properties"]
    for spec_field in dataclasses.fields(TrainConfig):
        if spec_field.name in HOST_FIELDS:
            continue
        prop = properties[spec_field.name]
        assert prop["description"].startswith(setting_help(spec_field.name)), spec_field.name
        assert prop.get("x-choices") == (
            list(setting_choices(spec_field.name)) if setting_choices(spec_field.name) else None
        )
    assert properties["lr_schedule"]["examples"] == ["linear"] and properties["equal_rows"]["examples"] == [True]
