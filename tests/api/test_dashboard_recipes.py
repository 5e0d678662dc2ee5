"""The dashboard's recipes module is generated from uds.config: the new-job form shows what the server applies."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from api.main import create_app
from uds.config import RECIPE_SETTINGS


def test_the_recipes_module_is_the_config_recipes(settings):
    with TestClient(create_app(settings)) as client:
        response = client.get("/static/js/recipes.js")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
        text = response.text
        assert json.loads(text[text.index("{") : text.rindex("}") + 1]) == RECIPE_SETTINGS
        again = client.get("/static/js/recipes.js", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
