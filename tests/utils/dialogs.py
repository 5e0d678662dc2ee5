"""A dashboard delete in a browser: the confirmation is asked, dismissed (the object stays), then accepted."""

from __future__ import annotations

import httpx


def delete_after_confirmation(page, button, object_url: str, gone_js: str) -> str:
    """Clicks `button` twice: dismissing the confirm() leaves `object_url` answering 200; accepting it makes the
    page satisfy `gone_js` and `object_url` answer 404. Returns the question the page asked."""
    from tests.e2e.test_dashboard import wait_js

    asked: list[str] = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    button.click()
    wait_js(page, "true")
    assert asked, "no confirmation was asked"
    assert httpx.get(object_url).status_code == 200  # dismissed: kept
    page.once("dialog", lambda dialog: dialog.accept())
    button.click()
    wait_js(page, gone_js)
    assert httpx.get(object_url).status_code == 404
    return asked[0]
