"""The duplicates page and API with a decision recorded: the decided group hidden, "show decided"
(``?all=1``) shows it marked. A real server process; the decision is written to its store as the
CLI writes it, and dropped again so the other web tests see the store as it was."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from imgwatch.store import open_store
from tests.helpers import make_config
from tests.web.conftest import PhotoSet, WebServer

THRESHOLD = "0.99995"  # the astronaut and its copies (see test_api.py)


@pytest.fixture
def client(web_server: WebServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=web_server.url, timeout=60) as opened:
        yield opened


def test_a_decided_group_is_hidden_until_show_decided_which_marks_it(client: httpx.Client,
                                                                    photo_set: PhotoSet) -> None:
    before = client.get(f"/api/duplicates?threshold={THRESHOLD}").json()
    group = next(g for g in before["groups"] if str(photo_set.photos["astronaut"]) in {i["path"] for i in g["images"]})
    assert group["decision"] is None and before["hidden"] == 0
    with open_store(make_config(photo_set.data_dir), create=False) as store:
        contents = [store.get_many([i["path"] for i in group["images"]])[i["path"]].sha256 for i in group["images"]]
        store.record_decision("not_duplicates", contents)
    try:
        hidden = client.get(f"/api/duplicates?threshold={THRESHOLD}").json()
        assert hidden["hidden"] == 1 and group["keep"] not in [g["keep"] for g in hidden["groups"]]
        shown = client.get(f"/api/duplicates?threshold={THRESHOLD}&all=1").json()
        [decided] = [g for g in shown["groups"] if g["keep"] == group["keep"]]
        assert decided["decided"] is True and decided["decision"]["kind"] == "not_duplicates"

        page = client.get(f"/duplicates?threshold={THRESHOLD}").text
        assert "Show decided (1 hidden)" in page and 'class="group decided"' not in page
        page = client.get(f"/duplicates?threshold={THRESHOLD}&all=1").text
        assert "Hide decided" in page and 'class="group decided"' in page and ": not duplicates" in page
        assert client.get("/api/duplicates?all=yes").status_code == 400
    finally:
        with open_store(make_config(photo_set.data_dir), create=False) as store:
            store.forget_decisions(contents)
