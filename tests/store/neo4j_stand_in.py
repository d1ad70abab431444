"""An in-memory stand-in for a Neo4j server, for Neo4jGraphStore's own logic (no driver, no server).

It answers the backend's statements (by their text in ``imgwatch.store.neo4j.cypher``) from
Python dicts and logs every statement with its transaction. Whether the Cypher itself is right
is checked by Neo4j's front end (test_cypher_front_end.py) and, with a server, test_contract.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from imgwatch.store import StoreError
from imgwatch.store.neo4j import Neo4jGraphStore, cosine_to_score
from imgwatch.store.neo4j import cypher as q
from tests.store import cypher_recording

Row = dict[str, Any]


class FakeResult:
    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)

    def single(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def consume(self) -> None:
        return None


class FakeServer:
    """Just enough of a Neo4j database for the backend's statements."""

    def __init__(self) -> None:
        self.images: dict[str, Row] = {}
        self.links: dict[tuple[str, str], float] = {}
        self.store: Row | None = None
        self.constraints: list[Row] = []
        self.indexes: list[Row] = []
        self.log: list[tuple[str, str]] = []  # (transaction kind, statement)
        self.sent: list[Row] = []  # SET_EMBEDDINGS rows as sent
        self.before_write: Callable[[], None] | None = None  # runs once, before the next write transaction
        self.ann_misses: set[frozenset[str]] = set()  # pairs the (approximate) index search does not return
        self.refuse_schema: set[str] = set()  # schema statements this user may not run (an editor)
        self.uri, self.database, self.location = "bolt://fake:7687", "neo4j", "bolt://fake:7687 database neo4j"
        self.version, self.edition = "5.26.0", "community"

    # -- the Connection interface -----------------------------------------------------

    def read(self, work: Callable[[FakeServer.Tx], Any]) -> Any:
        return work(FakeServer.Tx(self, "read"))

    def write(self, work: Callable[[FakeServer.Tx], Any]) -> Any:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        return work(FakeServer.Tx(self, "write"))

    def command(self, statement: str, *, tolerate: str | None = None, **parameters: Any) -> list[Row]:
        if statement in self.refuse_schema:
            self.log.append(("auto", statement))
            raise StoreError(f"Neo4j at {self.uri}: Schema operations are not allowed for user 'editor'")
        return list(FakeServer.Tx(self, "auto").run(statement, parameters))

    def close(self) -> None:
        pass

    class Tx:
        def __init__(self, server: FakeServer, kind: str) -> None:
            self.server, self.kind = server, kind

        def run(self, statement: str, parameters: Mapping[str, Any] | None = None, **kw: Any) -> FakeResult:
            self.server.log.append((self.kind, statement))
            merged = {**(parameters or {}), **kw}
            cypher_recording.record(statement, merged)  # for test_cypher_front_end.py
            return FakeResult(self.server.answer(statement, merged))

    # -- helpers ------------------------------------------------------------------------

    def statements(self, kind: str | None = None) -> list[str]:
        return [s for k, s in self.log if kind is None or k == kind]

    def score(self, a: str, b: str) -> float:
        x, y = (self.images[p]["embedding"].astype(np.float64) for p in (a, b))
        return cosine_to_score(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))

    def add_index(self, dim: int, name: str = q.VECTOR_INDEX, state: str = "ONLINE") -> None:
        self.indexes.append({"name": name, "type": "VECTOR", "entityType": "NODE", "labelsOrTypes": ["Image"],
                             "properties": ["embedding"], "state": state, "populationPercent": 100.0,
                             "options": {"indexConfig": {"vector.dimensions": dim,
                                                         "vector.similarity_function": "COSINE"}}})

    def answer(self, statement: str, p: dict[str, Any]) -> list[Row]:  # noqa: C901 - one branch per statement
        images, links = self.images, self.links
        if statement == q.SHOW_CONSTRAINTS:
            return list(self.constraints)
        if statement == q.SHOW_INDEXES:
            return list(self.indexes)
        if statement in (q.CREATE_PATH_CONSTRAINT, q.CREATE_STORE_CONSTRAINT):
            label, prop = ("Image", "path") if statement == q.CREATE_PATH_CONSTRAINT else ("ImgwatchStore", "key")
            self.constraints.append({"name": statement.split()[2], "type": "UNIQUENESS", "entityType": "NODE",
                                     "labelsOrTypes": [label], "properties": [prop]})
            return []
        if statement == q.CREATE_SCORE_INDEX:
            self.indexes.append({"name": q.SCORE_INDEX, "type": "RANGE", "entityType": "RELATIONSHIP",
                                 "labelsOrTypes": ["SIMILAR_TO"], "properties": ["score"], "state": "ONLINE",
                                 "populationPercent": 100.0, "options": {}})
            return []
        if statement == q.CREATE_HASH_INDEX:
            self.indexes.append({"name": q.HASH_INDEX, "type": "RANGE", "entityType": "NODE",
                                 "labelsOrTypes": ["Image"], "properties": ["sha256"], "state": "ONLINE",
                                 "populationPercent": 100.0, "options": {}})
            return []
        if statement.startswith("CREATE VECTOR INDEX"):
            if not any(i["name"] == q.VECTOR_INDEX for i in self.indexes):
                self.add_index(int(re.search(r"`vector.dimensions`: (\d+)", statement)[1]), state="POPULATING")
            return []
        if statement == q.DROP_VECTOR_INDEX:
            self.indexes = [i for i in self.indexes if i["name"] != q.VECTOR_INDEX]
            return []
        if statement == q.AWAIT_INDEX:
            for index in self.indexes:
                index["state"] = "ONLINE"
            return []
        if statement == q.STORE_STATE:
            return [dict(self.store)] if self.store else []
        if statement in (q.CREATE_STORE, q.LOCK_STORE_MODEL):
            self.store = self.store or {"version": p.get("version"), "model": None, "dim": None,
                                        "weights_file": None, "weights_sha256": None}
            return [dict(self.store)]
        if statement == q.SET_MODEL:
            assert self.store is not None
            self.store.update(model=p["model"], dim=p["dim"], weights_file=p["weights_file"],
                              weights_sha256=p["weights_sha256"])
            return []
        if statement == q.COUNT_IMAGES:
            return [{"count": len(images)}]
        if statement == q.COUNT_AT:
            return [{"count": int(p["path"] in images)}]
        if statement == q.COUNT_BELOW:
            return [{"count": sum(1 for path in images if p["prefix"] <= path < p["upper"])}]
        if statement == q.COUNT_LINKS:
            return [{"count": len(links)}]
        if statement == q.UPSERT_FACTS:
            assert all("embedding" not in row for row in p["rows"])  # facts and digests only
            changed = []
            for row in p["rows"]:
                node = images.setdefault(row["path"], {"linked": None, "pick_bar": None, "embedding_digest": None,
                                                       "indexed_at": None})
                node.update({k: row[k] for k in ("sha256", "size", "mtime_ns", "ctime_ns", "inode", "width", "height",
                                                 "model")})
                if row["linked"] is None:
                    node["linked"] = bool(node["linked"])
                else:
                    node["linked"], node["pick_bar"] = row["linked"], row["pick_bar"]
                    node["indexed_at"] = row["indexed_at"]
                if node["embedding_digest"] != row["digest"]:
                    changed.append({"changed": row["path"]})
            return changed
        if statement == q.SET_EMBEDDINGS:
            for row in p["rows"]:
                self.sent.append(row)
                node = images[row["path"]]
                node["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
                node["embedding_digest"] = row["digest"]
                node["linked"] = False if row["linked"] is None else row["linked"]
                node["indexed_at"] = row["indexed_at"]
            return []
        if statement == q.DROP_LINKS:
            for pair in [pair for pair in links if set(pair) & set(p["paths"])]:
                del links[pair]
            return []
        if statement == q.GET_MANY:
            return [{"path": path, **images[path]} for path in p["paths"] if path in images]
        if statement == q.REMOVE:
            removed = [path for path in p["paths"] if images.pop(path, None) is not None]
            for pair in [pair for pair in links if set(pair) & set(removed)]:
                del links[pair]
            return [{"removed": len(removed)}]
        if statement == q.EMBEDDINGS_BY_HASH:
            first: dict[str, Row] = {}
            for node in images.values():
                if node["sha256"] in p["hashes"] and node["model"] == p["model"] and "embedding" in node:
                    first.setdefault(node["sha256"], node)
            return [{"hash": h, "embedding": n["embedding"].tolist(), "width": n["width"], "height": n["height"]}
                    for h, n in first.items()]
        if statement == q.REPLACED_BY_MOVES:
            for move in p["moves"]:
                if move["old"] in images and move["new"] in images:
                    del images[move["new"]]
                    for pair in [pair for pair in links if move["new"] in pair]:
                        del links[pair]
            return []
        if statement == q.RENAME:
            renamed = 0
            for move in p["moves"]:
                if move["old"] in images:
                    assert move["new"] not in images  # the uniqueness constraint
                    images[move["new"]] = images.pop(move["old"])
                    for (a, b), score in [(pair, s) for pair, s in links.items() if move["old"] in pair]:
                        del links[(a, b)]  # the relationship keeps its direction (start, end): only a name changes
                        links[(move["new"] if a == move["old"] else a, move["new"] if b == move["old"] else b)] = score
                    renamed += 1
            return [{"renamed": renamed}]
        if statement == q.REORIENT_LINKS:
            for (a, b) in [pair for pair in links if set(pair) & set(p["paths"]) and pair[0] > pair[1]]:
                links[(b, a)] = links.pop((a, b))
            return []
        if statement == q.UPDATE_FILE_STATES:
            for row in p["rows"]:
                if row["path"] in images:
                    images[row["path"]].update({k: row[k] for k in ("size", "mtime_ns", "ctime_ns", "inode")})
            return []
        if statement in (q.FILE_STATE_AT, q.FILE_STATES_ALL, q.FILE_STATES_BELOW):
            if statement == q.FILE_STATE_AT:
                chosen = [path for path in images if path == p["path"]]
            else:
                chosen = sorted(path for path in images if path > p["after"]
                                and (statement == q.FILE_STATES_ALL or p["prefix"] <= path < p["upper"]))
                chosen = chosen[: p["limit"]]
            return [{"path": path, **{k: images[path][k] for k in ("size", "mtime_ns", "ctime_ns", "inode")}}
                    for path in chosen]
        if statement == q.NEAREST:
            query = np.asarray(p["vector"], dtype=np.float64)
            scored = sorted(((-cosine_to_score(float(n["embedding"] @ query / np.linalg.norm(n["embedding"]))), path)
                             for path, n in images.items() if path not in p["exclude"]))
            return [{"path": path, "score": -negative} for negative, path in scored[: p["k"]]]
        if statement == q.NEIGHBOURS:
            if p["path"] not in images:
                return []
            found = [(b if a == p["path"] else a, s) for (a, b), s in links.items() if p["path"] in (a, b)]
            rows = [{"path": path, "score": s} for path, s in sorted(found, key=lambda x: (-x[1], x[0]))]
            return rows or [{"path": None, "score": None}]
        if statement == q.LINKS_AT_LEAST:
            after = (p["score"], p["a"], p["b"])
            return [{"score": score, "low": a, "high": b} for score, a, b in
                    sorted((score, a, b) for (a, b), score in links.items() if score >= p["score"]
                           and (score, a, b) > after)][: p["limit"]]
        if statement == q.EXPORT_IMAGES:
            return [{"path": path, **node} for path, node in sorted(images.items()) if path > p["after"]][: p["limit"]]
        if statement == q.EXPORT_LINKS:
            return [{"path": path, "other": b if a == path else a, "score": score}
                    for path in p["paths"] for (a, b), score in links.items() if path in (a, b)]
        if statement == q.PRESENT:
            return [{"path": path, "digest": images[path]["embedding_digest"]} for path in p["paths"] if path in images]
        if statement == q.CANDIDATES:
            rows = []
            for path in p["paths"]:
                if path not in images:
                    continue
                scored = sorted(((self.score(path, other), other) for other in images
                                 if other != path and frozenset((path, other)) not in self.ann_misses),
                                key=lambda x: (-x[0], x[1]))[: p["candidates"]]
                rows += [{"path": path, "neighbour": other, "digest": images[other]["embedding_digest"], "score": s}
                         for s, other in scored if s >= p["min_score"]]
            return rows
        if statement == q.SERIALISE:
            return []
        if statement == q.CHANGED_SINCE:
            return [{"path": row["path"]} for row in p["rows"]
                    if row["path"] not in images or images[row["path"]]["embedding_digest"] != row["digest"]]
        if statement == q.FORMER_LINKS:
            rows = []
            for (a, b) in links:
                for inside, outside in ((a, b), (b, a)):
                    if inside in p["paths"] and outside not in p["paths"]:
                        rows.append({"outside": outside, "inside": inside, "bar": images[outside]["pick_bar"],
                                     "score": self.score(inside, outside)})
            return rows
        if statement == q.MARK_LINKED:
            for row in p["rows"]:
                if row["path"] in images:
                    images[row["path"]].update(linked=True, pick_bar=row["bar"])
            return []
        if statement == q.MARK_LINKED_KEEP_BARS:
            for path in p["paths"]:
                if path in images:
                    images[path]["linked"] = True
            return []
        if statement == q.WRITE_LINKS:
            written = 0
            for link in p["links"]:
                if link["a"] in images and link["b"] in images:
                    assert link["a"] < link["b"]
                    links[(link["a"], link["b"])] = link["score"]
                    written += 1
            return [{"written": written}]
        raise AssertionError(f"the fake server does not know this statement:\n{statement}")


def fake_store(server: FakeServer | None = None, *, writable: bool = True) -> tuple[Neo4jGraphStore, FakeServer]:
    """A Neo4jGraphStore whose connection is the fake server (no driver)."""
    server = server or FakeServer()
    return Neo4jGraphStore.on_connection(server, create=writable), server  # type: ignore[arg-type]
