"""The ingestion decisions (which files to read, retry, report) and the local folder source, without servers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlproject.loop.ingest import Burst
from mlproject.loop.ingest_ledger import IngestRules, Ledger, ledger_path, load_ledger, save_ledger
from mlproject.loop.sources import SOURCE_KEY, LocalFolderSource, SourceError, SourceObject

RULES = IngestRules(settle_s=1.0, max_attempts=3, retry_s=2.0)
T0 = 1_000_000.0


def obj(name: str, size: int = 10, stamp: float = T0) -> SourceObject:
    return SourceObject(f"file:{name}", f"/root/{name}", size, stamp)


def keys(objects) -> list[str]:
    return [o.key for o in objects]


# --- which files are read ---------------------------------------------------------------------------------


def test_a_new_file_is_read_once_unchanged_for_the_settle_time():
    ledger = Ledger("test")
    assert ledger.observe([obj("a.png")], T0, RULES) == []  # just written: wait
    assert ledger.observe([obj("a.png")], T0 + 0.5, RULES) == []
    assert keys(ledger.observe([obj("a.png")], T0 + 1.0, RULES)) == ["file:a.png"]


def test_a_file_that_keeps_changing_is_not_read_until_it_stops():
    ledger = Ledger("test")
    ledger.observe([obj("a.png", 10, T0)], T0, RULES)
    assert ledger.observe([obj("a.png", 20, T0 + 1.5)], T0 + 1.5, RULES) == []  # grew: the clock restarts
    assert ledger.observe([obj("a.png", 20, T0 + 1.5)], T0 + 2.0, RULES) == []
    assert keys(ledger.observe([obj("a.png", 20, T0 + 1.5)], T0 + 2.5, RULES)) == ["file:a.png"]


def test_files_already_old_at_start_are_read_at_once():
    ledger = Ledger("test")
    assert keys(ledger.observe([obj("old.png", stamp=T0 - 60)], T0, RULES)) == ["file:old.png"]


def test_ingested_files_are_never_read_again_even_when_changed():
    ledger = Ledger("test")
    ledger.mark_ingested(obj("a.png"), 7, by="ingest")
    assert ledger.observe([obj("a.png", 99, T0 + 5)], T0 + 60, RULES) == []
    assert ledger.ingested["file:a.png"]["task"] == 7


def test_a_pending_file_that_disappears_is_forgotten_not_failed():
    ledger = Ledger("test")
    ledger.observe([obj("a.png")], T0, RULES)
    ledger.observe([], T0 + 1, RULES)
    assert ledger.pending == {} and ledger.failed == {}
    # an incomplete listing (a page of an object store) says nothing about what it left out
    ledger.observe([obj("b.png")], T0, RULES)
    ledger.observe([], T0 + 1, RULES, complete=False)
    assert list(ledger.pending) == ["file:b.png"]


# --- retries and reports ----------------------------------------------------------------------------------


def test_a_bad_file_is_retried_with_growing_pauses_then_reported():
    ledger = Ledger("test")
    bad = obj("bad.png", stamp=T0 - 60)
    assert keys(ledger.observe([bad], T0, RULES)) == ["file:bad.png"]
    assert ledger.attempt_failed(bad, "truncated", T0, RULES) is None  # 1st: retry after 2 s
    assert ledger.observe([bad], T0 + 1.9, RULES) == []
    assert keys(ledger.observe([bad], T0 + 2.0, RULES)) == ["file:bad.png"]
    assert ledger.attempt_failed(bad, "truncated", T0 + 2.0, RULES) is None  # 2nd: after 4 s more
    assert ledger.observe([bad], T0 + 5.9, RULES) == []
    assert keys(ledger.observe([bad], T0 + 6.0, RULES)) == ["file:bad.png"]
    failed = ledger.attempt_failed(bad, "truncated", T0 + 6.0, RULES)
    assert failed is not None and (failed.name, failed.reason, failed.attempts) == ("/root/bad.png", "truncated", 3)
    assert "file:bad.png" not in ledger.pending
    assert ledger.observe([bad], T0 + 100, RULES) == []  # reported once, not retried forever


def test_a_failed_file_that_is_rewritten_gets_a_fresh_chance():
    ledger = Ledger("test", failed={})
    bad = obj("bad.png", stamp=T0 - 60)
    for attempt in range(3):
        ledger.attempt_failed(bad, "truncated", T0, RULES)
    assert "file:bad.png" in ledger.failed
    fixed = obj("bad.png", size=500, stamp=T0 + 10)
    assert ledger.observe([fixed], T0 + 10, RULES) == []  # changed: settles like a new file
    assert "file:bad.png" not in ledger.failed
    assert keys(ledger.observe([fixed], T0 + 11, RULES)) == ["file:bad.png"]
    assert ledger.pending["file:bad.png"].attempts == 0


def test_a_file_that_changes_between_attempts_starts_counting_again():
    ledger = Ledger("test")
    growing = obj("g.png", size=10, stamp=T0 - 60)
    ledger.observe([growing], T0, RULES)
    ledger.attempt_failed(growing, "truncated", T0, RULES)
    ledger.attempt_failed(growing, "truncated", T0, RULES)
    ledger.observe([obj("g.png", size=20, stamp=T0 + 1)], T0 + 1, RULES)
    assert ledger.pending["file:g.png"].attempts == 0 and not ledger.failed


def test_unpredicted_tasks_are_the_ones_this_ingestion_created_and_did_not_predict():
    ledger = Ledger("test")
    ledger.mark_ingested(obj("a.png"), 1, by="ingest")
    ledger.mark_ingested(obj("b.png"), 2, by="ingest")
    ledger.mark_ingested(obj("c.png"), 3, by="found")  # e.g. a storage sync's: `alloop sync` predicts it
    ledger.mark_ingested(obj("d.png"), 4, by="found-ingested")  # an ingestion's, its prediction unknown
    assert ledger.unpredicted() == {1: "file:a.png", 2: "file:b.png", 4: "file:d.png"}
    ledger.mark_predicted({1, 4})
    assert ledger.unpredicted() == {2: "file:b.png"}
    with pytest.raises(ValueError, match="origin"):
        ledger.mark_ingested(obj("e.png"), 5, by="someone")


def test_rules_refuse_nonsense():
    with pytest.raises(ValueError, match="attempts"):
        IngestRules(max_attempts=0)
    with pytest.raises(ValueError, match="seconds"):
        IngestRules(settle_s=-1)


# --- the ledger on disk -----------------------------------------------------------------------------------


def test_the_ledger_survives_a_restart_and_a_garbled_one_starts_empty(tmp_path):
    path = ledger_path(tmp_path, "host.project-1", "folder /x")
    ledger = Ledger("folder /x")
    ledger.mark_ingested(obj("a.png"), 5, by="ingest")
    ledger.observe([obj("p.png")], T0, RULES)
    for _ in range(3):
        ledger.attempt_failed(obj("bad.png"), "not an image", T0, RULES)
    save_ledger(path, ledger)
    again = load_ledger(path, "folder /x")
    assert again.ingested == ledger.ingested and again.pending == ledger.pending and again.failed == ledger.failed
    assert '"failed": [' in path.read_text()  # a list a person can read
    path.write_text("{not json")
    assert load_ledger(path, "folder /x").ingested == {}
    assert ledger_path(tmp_path, "k", "folder /a") != ledger_path(tmp_path, "k", "folder /b")


def test_burst_lines_name_failed_files_and_their_reasons():
    burst = Burst(created=[("/in/a.png", 3)], predicted=1, failed=[("/in/bad.png", "the file is empty")],
                  champion="m/2")
    text = "\n".join(burst.lines())
    assert text.startswith("1 file(s) -> 1 new task(s), 1 prediction(s) from m/2")
    assert "FAILED /in/bad.png: the file is empty" in text
    assert not Burst().active and burst.active


# --- the local folder source --------------------------------------------------------------------------------


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_local_source_lists_images_only_with_keys_relative_to_the_document_root(tmp_path):
    root = tmp_path / "root"
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "a.png").write_bytes(png_bytes())
    (root / "in" / "sub" / "b c.JPG").write_bytes(b"x")
    (root / "in" / ".a.png.tmp").write_bytes(b"x")  # a copier's temporary file
    (root / "in" / "a.png.part").write_bytes(b"x")
    (root / "in" / "notes.txt").write_text("x")
    source = LocalFolderSource(root / "in", root)
    objects, cursor = source.list(None)
    assert sorted(o.key for o in objects) == ["file:in/a.png", "file:in/sub/b c.JPG"]
    b = next(o for o in objects if o.key.endswith("JPG"))
    data = source.task_data(b, "image")
    assert data == {"image": "/data/local-files/?d=in/sub/b%20c.JPG", SOURCE_KEY: "file:in/sub/b c.JPG"}
    assert source.key_of_task(data, "image") == b.key
    # a task of a local-files storage sync (alloop init) has no key field: its URL says which file it shows
    assert source.key_of_task({"image": "/data/local-files/?d=in/sub/b%20c.JPG"}, "image") == b.key
    assert source.key_of_task({"image": "/data/upload/1/abc-a.png"}, "image") is None
    a = next(o for o in objects if o.key.endswith("a.png"))
    assert source.read(a) == png_bytes()


def test_local_source_refuses_folders_label_studio_cannot_serve(tmp_path):
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(SourceError, match="sub-folder of Label Studio's local-files document root"):
        LocalFolderSource(tmp_path / "elsewhere", root)
    with pytest.raises(SourceError, match="sub-folder"):
        LocalFolderSource(root, root)
    with pytest.raises(SourceError, match="LOCAL_FILES_DOCUMENT_ROOT"):
        LocalFolderSource(root / "in", None)
    assert LocalFolderSource(Path(root / "in"), root).description.endswith("in")
