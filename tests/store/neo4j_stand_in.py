"""An in-memory stand-in for a Neo4j server, for Neo4jGraphStore's own logic (no driver, no server).

It answers the backend's statements (by their text in ``imgwatch.store.neo4j.cypher``) from
Python dicts and logs every statement with its transaction. Whether the Cypher itself is right
is checked by Neo4j's front end (test_cypher_front_end.py) and, with a server, test_contract.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from imgwatch.store import StoreError
from imgwatch.store.neo4j import Neo4jGraphStore, cosine_to_score
from imgwatch.store.neo4j import cypher as q
from tests.store import cypher_recording

Row = dict[str, Any]
Params = dict[str, Any]

# CREATE_VECTOR_INDEX is a template (index options cannot be parameters): any dimension, read back.
CREATE_VECTOR_INDEX = re.compile(re.escape(q.CREATE_VECTOR_INDEX.format(dim="<dim>")).replace("<dim>", r"(?P<dim>\d+)"))
CREATE_NEXT_VECTOR_INDEX = re.compile(
    re.escape(q.CREATE_NEXT_VECTOR_INDEX.format(dim="<dim>")).replace("<dim>", r"(?P<dim>\d+)"))


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
        self.decisions: list[Row] = []  # :DuplicateDecision nodes
        self.constraints: list[Row] = []
        self.indexes: list[Row] = []
        self.log: list[tuple[str, str]] = []  # (transaction kind, statement)
        self.transactions: list[str] = []  # each transaction's kind, in order: read, write or auto
        self.sent: list[Row] = []  # SET_EMBEDDINGS rows as sent
        self.before_write: Callable[[], None] | None = None  # runs once, before the next write transaction
        self.ann_misses: set[frozenset[str]] = set()  # pairs the (approximate) index search does not return
        self.refuse_schema: set[str] = set()  # schema statements this user may not run (an editor)
        self.uri, self.database, self.location = "bolt://fake:7687", "neo4j", "bolt://fake:7687 database neo4j"
        self.version, self.edition = "5.26.0", "community"

    # -- the Connection interface -----------------------------------------------------

    def read(self, work: Callable[[FakeServer.Tx], Any]) -> Any:
        self.transactions.append("read")
        return work(FakeServer.Tx(self, "read"))

    def write(self, work: Callable[[FakeServer.Tx], Any]) -> Any:
        if self.before_write is not None:
            hook, self.before_write = self.before_write, None
            hook()
        self.transactions.append("write")
        return work(FakeServer.Tx(self, "write"))

    def command(self, statement: str, *, tolerate: str | None = None, **parameters: Any) -> list[Row]:
        self.transactions.append("auto")
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

    def forget_sent(self) -> None:
        """Start counting what is sent afresh (log, transactions, round trips)."""
        self.log.clear()
        self.transactions.clear()

    def round_trips(self) -> int:
        """The Bolt round trips a server would have answered for what was sent: one per statement
        (the driver sends RUN and PULL together), plus BEGIN and COMMIT for each managed transaction
        (the driver pipelines BEGIN only in driver.execute_query, which the backend does not use)."""
        return len(self.log) + 2 * sum(kind != "auto" for kind in self.transactions)

    def score(self, a: str, b: str) -> float:
        x, y = (self.images[p]["embedding"].astype(np.float64) for p in (a, b))
        return cosine_to_score(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))

    def add_index(self, dim: int, name: str = q.VECTOR_INDEX, state: str = "ONLINE") -> None:
        self.indexes.append({"name": name, "type": "VECTOR", "entityType": "NODE", "labelsOrTypes": ["Image"],
                             "properties": ["embedding"], "state": state, "populationPercent": 100.0,
                             "options": {"indexConfig": {"vector.dimensions": dim,
                                                         "vector.similarity_function": "COSINE"}}})

    def answer(self, statement: str, p: Params) -> list[Row]:
        answer = self._ANSWERS.get(statement)
        if answer is not None:
            return answer(self, p)
        if created := CREATE_VECTOR_INDEX.fullmatch(statement):
            return self._create_vector_index(int(created["dim"]))
        if created := CREATE_NEXT_VECTOR_INDEX.fullmatch(statement):
            return self._create_next_vector_index(int(created["dim"]))
        raise AssertionError(f"the fake server does not know this statement:\n{statement}")

    # -- one answer per statement (_ANSWERS below says which) ------------------------------

    def _show_constraints(self, p: Params) -> list[Row]:
        return list(self.constraints)

    def _show_indexes(self, p: Params) -> list[Row]:
        return list(self.indexes)

    def _add_constraint(self, name: str, label: str, prop: str) -> list[Row]:
        self.constraints.append({"name": name, "type": "UNIQUENESS", "entityType": "NODE",
                                 "labelsOrTypes": [label], "properties": [prop]})
        return []

    def _create_path_constraint(self, p: Params) -> list[Row]:
        return self._add_constraint(q.PATH_CONSTRAINT, "Image", "path")

    def _create_store_constraint(self, p: Params) -> list[Row]:
        return self._add_constraint(q.STORE_CONSTRAINT, "ImgwatchStore", "key")

    def _add_range_index(self, name: str, entity_type: str, label: str, prop: str) -> list[Row]:
        self.indexes.append({"name": name, "type": "RANGE", "entityType": entity_type, "labelsOrTypes": [label],
                             "properties": [prop], "state": "ONLINE", "populationPercent": 100.0, "options": {}})
        return []

    def _create_score_index(self, p: Params) -> list[Row]:
        return self._add_range_index(q.SCORE_INDEX, "RELATIONSHIP", "SIMILAR_TO", "score")

    def _create_hash_index(self, p: Params) -> list[Row]:
        return self._add_range_index(q.HASH_INDEX, "NODE", "Image", "sha256")

    def _create_vector_index(self, dim: int) -> list[Row]:
        if not any(i["name"] == q.VECTOR_INDEX for i in self.indexes):
            self.add_index(dim, state="POPULATING")
        return []

    def _drop_vector_index(self, p: Params) -> list[Row]:
        self.indexes = [i for i in self.indexes if i["name"] != q.VECTOR_INDEX]
        return []

    def _await_index(self, p: Params) -> list[Row]:
        for index in self.indexes:
            index["state"] = "ONLINE"
        return []

    def _store_state(self, p: Params) -> list[Row]:
        return [dict(self.store)] if self.store else []

    def _merge_store(self, p: Params) -> list[Row]:
        self.store = self.store or {"version": p.get("version"), "model": None, "dim": None,
                                    "weights_file": None, "weights_sha256": None}
        return [dict(self.store)]

    def _set_model(self, p: Params) -> list[Row]:
        assert self.store is not None
        self.store.update(model=p["model"], dim=p["dim"], weights_file=p["weights_file"],
                          weights_sha256=p["weights_sha256"])
        return []

    def _count_images(self, p: Params) -> list[Row]:
        return [{"count": len(self.images)}]

    def _count_at(self, p: Params) -> list[Row]:
        return [{"count": int(p["path"] in self.images)}]

    def _count_below(self, p: Params) -> list[Row]:
        return [{"count": sum(1 for path in self.images if p["prefix"] <= path < p["upper"])}]

    def _count_links(self, p: Params) -> list[Row]:
        return [{"count": len(self.links)}]

    def _upsert_facts(self, p: Params) -> list[Row]:
        assert all("embedding" not in row for row in p["rows"])  # facts and digests only
        changed = []
        for row in p["rows"]:
            node = self.images.setdefault(row["path"], {"linked": None, "pick_bar": None, "embedding_digest": None,
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

    def _set_embeddings(self, p: Params) -> list[Row]:
        for row in p["rows"]:
            self.sent.append(row)
            node = self.images[row["path"]]
            node["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
            node["embedding_digest"] = row["digest"]
            node["linked"] = False if row["linked"] is None else row["linked"]
            node["indexed_at"] = row["indexed_at"]
        return []

    def _drop_links(self, p: Params) -> list[Row]:
        for pair in [pair for pair in self.links if set(pair) & set(p["paths"])]:
            del self.links[pair]
        return []

    def _get_many(self, p: Params) -> list[Row]:
        return [{"path": path, **self.images[path]} for path in p["paths"] if path in self.images]

    def _remove(self, p: Params) -> list[Row]:
        removed = [path for path in p["paths"] if self.images.pop(path, None) is not None]
        for pair in [pair for pair in self.links if set(pair) & set(removed)]:
            del self.links[pair]
        return [{"removed": len(removed)}]

    def _embeddings_by_hash(self, p: Params) -> list[Row]:
        first: dict[str, Row] = {}
        wanted = set(p["hashes"])  # a list from the driver: a set keeps a 200k-image stand-in answering at once
        for node in self.images.values():
            if node["sha256"] in wanted and node["model"] == p["model"] and "embedding" in node:
                first.setdefault(node["sha256"], node)
        return [{"hash": h, "embedding": n["embedding"].tolist(), "width": n["width"], "height": n["height"]}
                for h, n in first.items()]

    def _same_content(self, p: Params) -> list[Row]:
        by_hash: dict[str, list[str]] = {}
        for path in sorted(self.images):
            by_hash.setdefault(self.images[path]["sha256"], []).append(path)
        return [{"hash": h, "paths": paths} for h, paths in sorted(by_hash.items()) if len(paths) > 1]

    def _forget_decisions(self, p: Params) -> list[Row]:
        kept = [d for d in self.decisions if not set(d["hashes"]) & set(p["hashes"])]
        forgotten, self.decisions = len(self.decisions) - len(kept), kept
        return [{"forgotten": forgotten}]

    def _record_decision(self, p: Params) -> list[Row]:
        self.decisions.append({key: p[key] for key in ("kind", "hashes", "keep", "decided_at")})
        return []

    def _decisions_about(self, p: Params) -> list[Row]:
        return sorted((dict(d) for d in self.decisions if set(d["hashes"]) & set(p["hashes"])),
                      key=lambda d: d["decided_at"])

    def _replaced_by_moves(self, p: Params) -> list[Row]:
        images, links = self.images, self.links
        for move in p["moves"]:
            if move["old"] in images and move["new"] in images:
                del images[move["new"]]
                for pair in [pair for pair in links if move["new"] in pair]:
                    del links[pair]
        return []

    def _rename(self, p: Params) -> list[Row]:
        images, links = self.images, self.links
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

    def _reorient_links(self, p: Params) -> list[Row]:
        for (a, b) in [pair for pair in self.links if set(pair) & set(p["paths"]) and pair[0] > pair[1]]:
            self.links[(b, a)] = self.links.pop((a, b))
        return []

    def _update_file_states(self, p: Params) -> list[Row]:
        for row in p["rows"]:
            if row["path"] in self.images:
                self.images[row["path"]].update({k: row[k] for k in ("size", "mtime_ns", "ctime_ns", "inode")})
        return []

    def _file_states(self, paths: list[str]) -> list[Row]:
        return [{"path": path, **{k: self.images[path][k] for k in ("size", "mtime_ns", "ctime_ns", "inode")}}
                for path in paths]

    def _file_state_at(self, p: Params) -> list[Row]:
        return self._file_states([p["path"]] if p["path"] in self.images else [])

    def _file_states_all(self, p: Params) -> list[Row]:
        return self._file_states(sorted(path for path in self.images if path > p["after"])[: p["limit"]])

    def _file_states_below(self, p: Params) -> list[Row]:
        below = sorted(path for path in self.images if path > p["after"] and p["prefix"] <= path < p["upper"])
        return self._file_states(below[: p["limit"]])

    def _nearest(self, p: Params) -> list[Row]:
        query = np.asarray(p["vector"], dtype=np.float64)
        scored = sorted(((-cosine_to_score(float(n["embedding"] @ query / np.linalg.norm(n["embedding"]))), path)
                         for path, n in self.images.items() if path not in p["exclude"]))
        return [{"path": path, "score": -negative} for negative, path in scored[: p["k"]]]

    def _neighbours(self, p: Params) -> list[Row]:
        if p["path"] not in self.images:
            return []
        found = [(b if a == p["path"] else a, s) for (a, b), s in self.links.items() if p["path"] in (a, b)]
        rows = [{"path": path, "score": s} for path, s in sorted(found, key=lambda x: (-x[1], x[0]))]
        return rows or [{"path": None, "score": None}]

    def _links_at_least(self, p: Params) -> list[Row]:
        after = (p["score"], p["a"], p["b"])
        return [{"score": score, "low": a, "high": b} for score, a, b in
                sorted((score, a, b) for (a, b), score in self.links.items() if score >= p["score"]
                       and (score, a, b) > after)][: p["limit"]]

    def _export_images(self, p: Params) -> list[Row]:
        return [{"path": path, **node} for path, node in sorted(self.images.items()) if path > p["after"]][: p["limit"]]

    def _export_links(self, p: Params) -> list[Row]:
        return [{"path": path, "other": b if a == path else a, "score": score}
                for path in p["paths"] for (a, b), score in self.links.items() if path in (a, b)]

    def _present(self, p: Params) -> list[Row]:
        return [{"path": path, "digest": self.images[path]["embedding_digest"]}
                for path in p["paths"] if path in self.images]

    def _candidates(self, p: Params) -> list[Row]:
        images = self.images
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

    def _serialise(self, p: Params) -> list[Row]:
        return []

    def _changed_since(self, p: Params) -> list[Row]:
        return [{"path": row["path"]} for row in p["rows"]
                if row["path"] not in self.images or self.images[row["path"]]["embedding_digest"] != row["digest"]]

    def _former_links(self, p: Params) -> list[Row]:
        rows = []
        for (a, b) in self.links:
            for inside, outside in ((a, b), (b, a)):
                if inside in p["paths"] and outside not in p["paths"]:
                    rows.append({"outside": outside, "inside": inside, "bar": self.images[outside]["pick_bar"],
                                 "score": self.score(inside, outside)})
        return rows

    def _mark_linked(self, p: Params) -> list[Row]:
        for row in p["rows"]:
            if row["path"] in self.images:
                self.images[row["path"]].update(linked=True, pick_bar=row["bar"])
        return []

    def _mark_linked_keep_bars(self, p: Params) -> list[Row]:
        for path in p["paths"]:
            if path in self.images:
                self.images[path]["linked"] = True
        return []

    def _write_links(self, p: Params) -> list[Row]:
        written = 0
        for link in p["links"]:
            if link["a"] in self.images and link["b"] in self.images:
                assert link["a"] < link["b"]
                self.links[(link["a"], link["b"])] = link["score"]
                written += 1
        return [{"written": written}]

    # -- the pending space ----------------------------------------------------------------

    def _create_next_vector_index(self, dim: int) -> list[Row]:
        if not any(i["name"] == q.NEXT_VECTOR_INDEX for i in self.indexes):
            self.add_index(dim, name=q.NEXT_VECTOR_INDEX, state="POPULATING")
            self.indexes[-1]["properties"] = ["embedding_next"]
        return []

    def _drop_next_vector_index(self, p: Params) -> list[Row]:
        self.indexes = [i for i in self.indexes if i["name"] != q.NEXT_VECTOR_INDEX]
        return []

    _PENDING_KEYS = ("pending_model", "pending_dim", "pending_weights_file", "pending_weights_sha256")

    def _pending_state(self, p: Params) -> list[Row]:
        if self.store is None:
            return []
        return [{"model": self.store["model"], **{key: self.store.get(key) for key in self._PENDING_KEYS}}]

    def _set_pending(self, p: Params) -> list[Row]:
        assert self.store is not None
        values = (p["model"], p["dim"], p["weights_file"], p["weights_sha256"])
        self.store.update(zip(self._PENDING_KEYS, values, strict=True))
        return []

    def _is_pending(self, node: Row) -> bool:
        return node.get("embedding_next_sha256") == node["sha256"]

    def _count_pending(self, p: Params) -> list[Row]:
        return [{"count": sum(1 for node in self.images.values() if self._is_pending(node))}]

    def _put_pending(self, p: Params) -> list[Row]:
        stored = 0
        for row in p["rows"]:
            node = self.images.get(row["path"])
            if node is not None and node["sha256"] == row["sha256"]:
                node.update(embedding_next=np.asarray(row["embedding"], dtype=np.float32),
                            embedding_next_sha256=row["sha256"], embedding_next_digest=row["digest"])
                stored += 1
        return [{"stored": stored}]

    def _pending_by_hash(self, p: Params) -> list[Row]:
        first: dict[str, Row] = {}
        for node in self.images.values():
            if node["sha256"] in p["hashes"] and node.get("embedding_next_sha256") == node["sha256"]:
                first.setdefault(node["sha256"], node)
        return [{"hash": h, "embedding": n["embedding_next"].tolist()} for h, n in first.items()]

    def _paths_without_pending(self, p: Params) -> list[Row]:
        return [{"path": path} for path in sorted(self.images)
                if path > p["after"] and not self._is_pending(self.images[path])][: p["limit"]]

    def _pending_page(self, p: Params) -> list[Row]:
        return [{"path": path, "pending": self.images[path].get("embedding_next_sha256")}
                for path in sorted(self.images) if path > p["after"]][: p["limit"]]

    def _pending_score(self, a: str, b: str) -> float:
        x, y = (self.images[path]["embedding_next"].astype(np.float64) for path in (a, b))
        return cosine_to_score(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))

    def _pending_candidates(self, p: Params) -> list[Row]:
        rows = []
        for path in p["paths"]:
            if path not in self.images or "embedding_next" not in self.images[path]:
                continue
            scored = sorted(((self._pending_score(path, other), other) for other, node in self.images.items()
                             if other != path and self._is_pending(node)), key=lambda x: (-x[0], x[1]))
            rows += [{"path": path, "neighbour": other, "score": s}
                     for s, other in scored[: p["candidates"]] if s >= p["min_score"]]
        return rows

    def _pending_scores(self, p: Params) -> list[Row]:
        return [{"a": pair["a"], "b": pair["b"], "score": self._pending_score(pair["a"], pair["b"])}
                for pair in p["pairs"] if pair["a"] in self.images and pair["b"] in self.images]

    def _swap_embeddings(self, p: Params) -> list[Row]:
        for node in self.images.values():
            node.update(embedding=node.pop("embedding_next"), embedding_digest=node.pop("embedding_next_digest"),
                        model=p["model"], linked=True, pick_bar=None, indexed_at=p["now"])
            del node["embedding_next_sha256"]
        return []

    def _drop_pending_vectors(self, p: Params) -> list[Row]:
        for node in self.images.values():
            for key in ("embedding_next", "embedding_next_sha256", "embedding_next_digest"):
                node.pop(key, None)
        return []

    # Each statement the backend sends, by its text in cypher.py (so a changed statement fails
    # loudly in answer()), and its answer. CREATE_VECTOR_INDEX is a template: answer() matches it.
    _ANSWERS: ClassVar[dict[str, Callable[[FakeServer, Params], list[Row]]]] = {
        q.SHOW_CONSTRAINTS: _show_constraints,
        q.SHOW_INDEXES: _show_indexes,
        q.CREATE_PATH_CONSTRAINT: _create_path_constraint,
        q.CREATE_STORE_CONSTRAINT: _create_store_constraint,
        q.CREATE_SCORE_INDEX: _create_score_index,
        q.CREATE_HASH_INDEX: _create_hash_index,
        q.DROP_VECTOR_INDEX: _drop_vector_index,
        q.AWAIT_INDEX: _await_index,
        q.STORE_STATE: _store_state,
        q.CREATE_STORE: _merge_store,
        q.LOCK_STORE_MODEL: _merge_store,
        q.SET_MODEL: _set_model,
        q.COUNT_IMAGES: _count_images,
        q.COUNT_AT: _count_at,
        q.COUNT_BELOW: _count_below,
        q.COUNT_LINKS: _count_links,
        q.UPSERT_FACTS: _upsert_facts,
        q.SET_EMBEDDINGS: _set_embeddings,
        q.DROP_LINKS: _drop_links,
        q.GET_MANY: _get_many,
        q.REMOVE: _remove,
        q.EMBEDDINGS_BY_HASH: _embeddings_by_hash,
        q.SAME_CONTENT: _same_content,
        q.FORGET_DECISIONS: _forget_decisions,
        q.RECORD_DECISION: _record_decision,
        q.DECISIONS_ABOUT: _decisions_about,
        q.REPLACED_BY_MOVES: _replaced_by_moves,
        q.RENAME: _rename,
        q.REORIENT_LINKS: _reorient_links,
        q.UPDATE_FILE_STATES: _update_file_states,
        q.FILE_STATE_AT: _file_state_at,
        q.FILE_STATES_ALL: _file_states_all,
        q.FILE_STATES_BELOW: _file_states_below,
        q.NEAREST: _nearest,
        q.NEAREST_EXACT: _nearest,  # the same answer: the stand-in's search is exact anyway
        q.NEIGHBOURS: _neighbours,
        q.LINKS_AT_LEAST: _links_at_least,
        q.EXPORT_IMAGES: _export_images,
        q.EXPORT_LINKS: _export_links,
        q.PRESENT: _present,
        q.CANDIDATES: _candidates,
        q.SERIALISE: _serialise,
        q.CHANGED_SINCE: _changed_since,
        q.FORMER_LINKS: _former_links,
        q.MARK_LINKED: _mark_linked,
        q.MARK_LINKED_KEEP_BARS: _mark_linked_keep_bars,
        q.WRITE_LINKS: _write_links,
        q.DROP_NEXT_VECTOR_INDEX: _drop_next_vector_index,
        q.PENDING_STATE: _pending_state,
        q.SET_PENDING: _set_pending,
        q.COUNT_PENDING: _count_pending,
        q.PUT_PENDING: _put_pending,
        q.PENDING_BY_HASH: _pending_by_hash,
        q.PATHS_WITHOUT_PENDING: _paths_without_pending,
        q.PENDING_PAGE: _pending_page,
        q.PENDING_CANDIDATES: _pending_candidates,
        q.PENDING_SCORES: _pending_scores,
        q.SWAP_EMBEDDINGS: _swap_embeddings,
        q.DROP_PENDING_VECTORS: _drop_pending_vectors,
    }


def fake_store(server: FakeServer | None = None, *, writable: bool = True) -> tuple[Neo4jGraphStore, FakeServer]:
    """A Neo4jGraphStore whose connection is the fake server (no driver)."""
    server = server or FakeServer()
    return Neo4jGraphStore.on_connection(server, create=writable), server  # type: ignore[arg-type]
