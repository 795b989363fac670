"""Importers with good and bad input, on every backend: clear reasons, nothing else lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from deeptrain.errors import InvalidInput, NotFound
from deeptrain.sample_data import deepforest_data_dir
from deeptrain.store import Input, open_store
from tests import imagegen
from tests.conftest import run_cli


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def reasons(report) -> dict[str, str]:
    return {Path(r["file"].split(":")[0]).name if "/" in r["file"] else r["file"]: r["reason"] for r in report["rejected"]}


def stored_objects(client, app: str) -> list[str]:
    return list(client.ctx.storage.list(f"apps/{app}/inputs"))


def assert_consistent(client, app: str) -> None:
    """Every input row has its bytes; every stored object belongs to an input."""
    keys = {i.storage_key for i in _rows(client, app)}
    assert keys == set(stored_objects(client, app))


def _rows(client, app):
    with client.ctx.store.session() as s:
        return s.scalars(select(Input).where(Input.app_id == app)).all()


@pytest.fixture
def bad_folder(tmp_path) -> Path:
    root = tmp_path / "folder"
    good = imagegen.png_bytes((10, 20, 30))
    write(root / "cat" / "good1.png", good)
    write(root / "cat" / "good2.jpg", imagegen.jpeg_bytes())
    write(root / "dog" / "good3.png", imagegen.png_bytes((90, 90, 90)))
    write(root / "cat" / "notes.txt", imagegen.NOT_AN_IMAGE)
    write(root / "dog" / "trunc.jpg", imagegen.truncated_jpeg())
    write(root / "dog" / "empty.png", b"")
    write(root / "dog" / "bomb.png", imagegen.bomb_png())
    write(root / "cat" / "zz-dup.png", good)
    write(root / "stray.png", imagegen.png_bytes((1, 2, 3)))
    return root


def test_imagefolder_with_bad_files(client, bad_folder):
    client.create_app("pets")
    report = client.import_inputs("pets", bad_folder, format="imagefolder")
    assert report["imported"] == 3
    assert report["duplicates"] == 1
    why = reasons(report)
    assert set(why) == {"notes.txt", "trunc.jpg", "empty.png", "bomb.png", "stray.png"}
    assert "not an image" in why["notes.txt"]
    assert "truncated" in why["trunc.jpg"]
    assert "empty file" in why["empty.png"]
    assert "decompression bomb" in why["bomb.png"] and "10000x10000" in why["bomb.png"]
    assert "not inside a concept folder" in why["stray.png"]

    concepts = {c["id"]: c["num_labels"] for c in client.list_concepts("pets")}
    assert concepts == {"cat": 2, "dog": 1}
    assert_consistent(client, "pets")

    again = client.import_inputs("pets", bad_folder, format="imagefolder")
    assert (again["imported"], again["duplicates"], len(again["rejected"])) == (0, 4, 5)
    assert len(client.list_inputs("pets")) == 3


def test_split_override_and_invalid_split(local_client, bad_folder):
    local_client.create_app("pets")
    local_client.import_inputs("pets", bad_folder, format="imagefolder", split="test")
    assert {i["split"] for i in local_client.list_inputs("pets")} == {"test"}
    local_client.import_inputs("pets", bad_folder, format="imagefolder", split="val")  # duplicates: split kept
    with pytest.raises(InvalidInput, match=r"split 'holdout' is not one of train, validation, test \(or val\)"):
        local_client.import_inputs("pets", bad_folder, format="imagefolder", split="holdout")


def test_invalid_app_and_paths(local_client, tmp_path):
    with pytest.raises(InvalidInput, match="invalid app id 'Bad App'"):
        local_client.create_app("Bad App")
    with pytest.raises(NotFound, match="app 'ghost' does not exist"):
        local_client.import_inputs("ghost", tmp_path, format="imagefolder")
    local_client.create_app("a")
    with pytest.raises(InvalidInput, match="does not exist"):
        local_client.import_inputs("a", tmp_path / "missing", format="imagefolder")
    with pytest.raises(InvalidInput, match="unknown format 'tiff'; valid formats"):
        local_client.import_inputs("a", tmp_path, format="tiff")
    with pytest.raises(InvalidInput, match="imports a file"):
        local_client.import_inputs("a", tmp_path, format="coco")


def test_coco_with_bad_annotations(client, tmp_path):
    root = tmp_path / "coco"
    for n, color in zip("abcde", [(1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 5, 5)]):
        write(root / "images" / f"{n}.png", imagegen.png_bytes(color, size=(100, 50)))
    write(tmp_path / "escape.png", imagegen.png_bytes((6, 6, 6)))
    doc = {
        "images": [{"id": i, "file_name": f"{n}.png", "width": 100, "height": 50} for i, n in enumerate("abcd", 1)]
        + [{"id": 5, "file_name": "../escape.png"}],
        "categories": [{"id": 1, "name": "Tree"}, {"id": 2, "name": "Car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50.5, 20.25, 30, 29.75]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [90, 10, 30, 10]},  # outside (x to 120 > 100)
            {"id": 4, "image_id": 3, "category_id": 77, "bbox": [1, 1, 5, 5]},  # unknown category
            {"id": 5, "image_id": 4, "category_id": 1, "bbox": [10, 10, 5, -5]},  # inverted
            {"id": 6, "image_id": 999, "category_id": 1, "bbox": [1, 1, 5, 5]},  # unknown image
        ],
    }
    write(root / "instances.json", json.dumps(doc).encode())
    client.create_app("coco")
    report = client.import_inputs("coco", root / "instances.json", format="coco")
    assert report["imported"] == 1, report
    by_file = {r["file"]: r["reason"] for r in report["rejected"]}
    assert len(by_file) == 5
    assert any("annotations[5]" in f and "image_id 999 is not in the images list" in r for f, r in by_file.items())
    assert any("images[1]" in f and "outside the image" in r for f, r in by_file.items())
    assert any("images[2]" in f and "category_id 77, which is not in the categories list" in r for f, r in by_file.items())
    assert any("images[3]" in f and "inverted" in r for f, r in by_file.items())
    assert any("images[4]" in f and "path traversal" in r for f, r in by_file.items())
    [inp] = client.list_inputs("coco")
    regions = sorted(inp["regions"], key=lambda r: r["concept"])
    assert regions[0] == pytest.approx({"concept": "car", "top_row": 20.25 / 50, "left_col": 50.5 / 100,
                                        "bottom_row": 1.0, "right_col": 80.5 / 100})
    assert regions[1]["concept"] == "tree"
    assert {c["id"]: c["name"] for c in client.list_concepts("coco")} == {"car": "Car", "tree": "Tree"}
    assert_consistent(client, "coco")


def test_csv_and_jsonl_with_bad_rows(client, tmp_path):
    root = tmp_path / "tab"
    write(root / "imgs" / "a.png", imagegen.png_bytes((1, 1, 1)))
    write(root / "imgs" / "b.png", imagegen.png_bytes((2, 2, 2)))
    write(tmp_path / "secret.png", imagegen.png_bytes((3, 3, 3)))
    (root / "labels.csv").write_text(
        "path,concepts,negatives,split,metadata\n"
        "imgs/a.png,cat;cute,dog,train,\"{\"\"k\"\": 1}\"\n"
        "../secret.png,cat,,,\n"
        "imgs/missing.png,cat,,,\n"
        "imgs/b.png,dog,,holdout,\n"
        "imgs/b.png,dog,dog,,\n"
    )
    client.create_app("tab")
    report = client.import_inputs("tab", root / "labels.csv", format="csv")
    assert report["imported"] == 1
    why = {r["file"].rsplit(":", 1)[1]: r["reason"] for r in report["rejected"]}
    assert "path traversal" in why["3"]
    assert "file not found" in why["4"]
    assert "split 'holdout' is not one of train, validation, test (or val)" in why["5"]
    assert "both positive and negative" in why["6"]
    [inp] = client.list_inputs("tab")
    assert (sorted(inp["concepts"]), inp["negatives"], inp["split"], inp["metadata"]) == (["cat", "cute"], ["dog"], "train", {"k": 1})

    stored = client.ctx.storage.uri_for(f"apps/tab/inputs/{inp['sha256'][:2]}/{inp['sha256']}.png")
    lines = [
        {"url": stored, "concepts": ["x"]},  # a stored object: a duplicate of a.png
        {"path": "imgs/b.png", "regions": [{"concept": "dog", "top_row": 0.1, "left_col": 0.1, "bottom_row": 0.5, "right_col": 0.6}]},
        {"path": "imgs/b.png", "regions": [{"concept": "dog", "top_row": 0.1}]},
        {"url": "s3://another-bucket/x.png"},
    ]
    (root / "labels.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    report = client.import_inputs("tab", root / "labels.jsonl", format="jsonl")
    assert (report["imported"], report["duplicates"]) == (1, 1)
    why = {r["file"].rsplit(":", 1)[1]: r["reason"] for r in report["rejected"]}
    assert "regions[0] needs 'concept'" in why["3"]
    assert "does not name an input of app 'tab'" in why["4"]
    assert "invalid JSON" in why["5"]
    assert_consistent(client, "tab")


def test_yolo_import(client, tmp_path):
    root = tmp_path / "yolo"
    write(root / "classes.txt", b"circle\nsquare\n")
    write(root / "images" / "a.png", imagegen.png_bytes((1, 1, 1), size=(64, 32)))
    write(root / "labels" / "a.txt", b"0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.1 0.1\n")
    write(root / "images" / "b.png", imagegen.png_bytes((2, 2, 2)))
    write(root / "labels" / "b.txt", b"5 0.5 0.5 0.1 0.1\n")
    write(root / "images" / "c.png", imagegen.png_bytes((3, 3, 3)))
    write(root / "labels" / "c.txt", b"0 0.5 0.5 oops 0.1\n")
    client.create_app("yolo")
    report = client.import_inputs("yolo", root, format="yolo")
    assert report["imported"] == 1
    why = reasons(report)
    assert "class 5 is not in the class list (2 classes)" in why["b.png"]
    assert "expected 'class cx cy w h'" in why["c.png"]
    [inp] = client.list_inputs("yolo")
    assert sorted(r["concept"] for r in inp["regions"]) == ["circle", "square"]
    circle = next(r for r in inp["regions"] if r["concept"] == "circle")
    assert circle == pytest.approx({"concept": "circle", "top_row": 0.25, "left_col": 0.375, "bottom_row": 0.75, "right_col": 0.625})


def test_voc_deepforest_real_images(client):
    """The aerial tree images with VOC boxes shipped inside PyPI deepforest: every box kept."""
    data = deepforest_data_dir()
    import xml.etree.ElementTree as ET

    expected = sum(len(ET.parse(x).getroot().findall("object")) for x in data.glob("*.xml"))
    client.create_app("trees")
    report = client.import_inputs("trees", data, format="voc")
    assert (report["imported"], report["rejected"]) == (4, [])
    assert sum(len(i["regions"]) for i in client.list_inputs("trees")) == expected > 900


def test_voc_bad_xml(local_client, tmp_path):
    root = tmp_path / "voc"
    write(root / "a.png", imagegen.png_bytes(size=(50, 50)))
    write(root / "good.xml", b"<annotation><filename>a.png</filename><object><name>x</name><bndbox>"
          b"<xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
    write(root / "broken.xml", b"<annotation><filename>")
    write(root / "nofile.xml", b"<annotation><filename>zz.png</filename></annotation>")
    write(root / "box.xml", b"<annotation><filename>a.png</filename><object><name>x</name><bndbox>"
          b"<xmin>1</xmin><ymin>2</ymin><xmax>99</xmax><ymax>30</ymax></bndbox></object></annotation>")
    write(root / "nan.xml", b"<annotation><filename>a.png</filename><object><name>x</name><bndbox>"
          b"<xmin>a</xmin><ymin>2</ymin><xmax>9</xmax><ymax>30</ymax></bndbox></object></annotation>")
    local_client.create_app("voc")
    report = local_client.import_inputs("voc", root, format="voc")
    why = reasons(report)
    assert report["imported"] == 1
    assert "not valid XML" in why["broken.xml"]
    assert "file not found" in why["nofile.xml"]
    assert "outside the image" in why["box.xml"]
    assert "<xmin> is missing or not a number" in why["nan.xml"]


def test_concept_delete_refused_when_used(local_client, bad_folder):
    local_client.create_app("pets")
    local_client.import_inputs("pets", bad_folder, format="imagefolder")
    from deeptrain.errors import Conflict

    with pytest.raises(Conflict, match="used by 2 annotation"):
        local_client.delete_concept("pets", "cat")
    assert local_client.delete_concept("pets", "cat", force=True)["annotations_deleted"] == 2
    assert [c["id"] for c in local_client.list_concepts("pets")] == ["dog"]


def test_delete_app_removes_everything(client, bad_folder):
    client.create_app("pets")
    client.import_inputs("pets", bad_folder, format="imagefolder")
    assert stored_objects(client, "pets")
    client.delete_app("pets")
    assert stored_objects(client, "pets") == []
    with pytest.raises(NotFound):
        client.list_inputs("pets")


def test_inputs_page_by_key_as_by_offset(local_client, bad_folder):
    from deeptrain.services.inputs import list_inputs

    local_client.create_app("pets")
    local_client.import_inputs("pets", bad_folder, format="imagefolder")
    ids = [i["id"] for i in list_inputs(local_client.ctx, "pets")]
    by_key = [i["id"] for i in list_inputs(local_client.ctx, "pets", limit=2, after=ids[0])]
    assert by_key == [i["id"] for i in list_inputs(local_client.ctx, "pets", limit=2, offset=1)] == ids[1:3]
    assert list_inputs(local_client.ctx, "pets", after=ids[-1]) == []


def test_each_image_is_written_once_at_its_key_and_never_again(client, bad_folder, monkeypatch):
    """Content-addressed bytes go straight to their key (no temporary key, no move: on S3 one PUT); a copy
    within the import and everything a re-import meets again is not written a second time."""
    from deeptrain.storage import TMP_PREFIX, Storage

    writes: list[str] = []
    put_immutable = Storage.put_immutable

    def counted(self, key, data):
        writes.append(key)
        put_immutable(self, key, data)

    monkeypatch.setattr(Storage, "put_immutable", counted)
    if not client.ctx.storage.is_local:  # on S3 no write may go through a temporary key and a move
        monkeypatch.setattr(Storage, "writer", lambda self, key: pytest.fail(f"{key} written through a move"))
    client.create_app("pets")
    report = client.import_inputs("pets", bad_folder, format="imagefolder")
    assert (report["imported"], report["duplicates"]) == (3, 1)  # good1.png and zz-dup.png: the same bytes
    assert sorted(writes) == sorted(i.storage_key for i in _rows(client, "pets"))
    assert list(client.ctx.storage.list(TMP_PREFIX)) == []
    writes.clear()
    again = client.import_inputs("pets", bad_folder, format="imagefolder")
    assert (again["imported"], again["duplicates"], writes) == (0, 4, [])
    assert_consistent(client, "pets")


@pytest.mark.parametrize("where", ["main thread", "workers"])
def test_an_import_checked_on_the_main_thread_or_by_the_workers_ends_the_same(client, bad_folder, where, monkeypatch):
    """Small images on local files are checked on the main thread (a hand-off costs more than the check), larger
    ones (and all on S3) by the workers: either way the same inputs, duplicates, rejections and outcomes, in
    record order."""
    import threading

    from deeptrain.services import import_pace, import_pipeline

    for i in range(70):  # several groups, each with its probe and its rest
        write(bad_folder / f"c{i % 2}" / f"{i:03d}.png", imagegen.png_bytes((i, 255 - i, 7), size=(12, 12)))
    write(bad_folder / "c1" / "zz-copy.png", imagegen.png_bytes((3, 252, 7), size=(12, 12)))  # a copy of 003.png
    monkeypatch.setattr(import_pace, "INLINE_BELOW_S", float("inf") if where == "main thread" else 0.0)
    threads: set[str] = set()
    check = import_pipeline._check

    def seen(*args):
        threads.add(threading.current_thread().name)
        return check(*args)

    monkeypatch.setattr(import_pipeline, "_check", seen)
    from deeptrain.formats import imagefolder

    client.create_app("pets")
    report = import_pipeline.import_records(client.ctx, "pets", imagefolder.read(bad_folder), outcomes=True).as_dict()
    assert (report["imported"], report["duplicates"], len(report["rejected"])) == (73, 2, 5)
    items = report["items"]
    assert [item["index"] for item in items] == list(range(80))
    by_file = {Path(r["file"]).name for r in report["rejected"]}
    assert by_file == {"notes.txt", "trunc.jpg", "empty.png", "bomb.png", "stray.png"}
    assert [i["outcome"] for i in items].count("duplicate") == 2
    workers = {t for t in threads if t.startswith("import-check")}
    if where == "main thread" and client.ctx.storage.is_local:  # on S3 the main thread feeds the uploads
        assert threads == {"MainThread"}
    else:
        assert workers and len(threads - workers) <= 1  # only the probes of one group in SAMPLE_EVERY stay
    assert_consistent(client, "pets")


def test_the_pace_follows_the_median_of_the_last_measures():
    """One slow record (a garbage collection) does not send the import to the workers; larger images do, and
    while they are checked there one group in SAMPLE_EVERY is measured again."""
    from deeptrain.services.import_pace import INLINE_BELOW_S, SAMPLE_EVERY, Pace

    pace, cheap, slow = Pace(), INLINE_BELOW_S / 5, INLINE_BELOW_S * 20
    assert pace.cheap and pace.inline()
    for seconds in (cheap, slow, cheap):
        pace.measured(seconds * 2, 2)
    assert pace.cheap
    pace.measured(slow, 1)
    pace.measured(slow, 1)
    assert not pace.cheap
    measured_again = [pace.inline() for _ in range(SAMPLE_EVERY * 3)]
    assert measured_again.count(True) == 3
    pace.measured(cheap, 1)
    pace.measured(cheap, 1)
    assert pace.cheap
    s3 = Pace(threshold_s=0.0)  # S3: always the workers, never a probe on the main thread
    assert not any(s3.inline() for _ in range(SAMPLE_EVERY * 3)) and not s3.cheap


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_kill_9_mid_import_leaves_no_half_input_and_rerun_completes(backend, tmp_path, request):
    """A crash in the middle of an import: no visible input without bytes; re-running finishes the job."""
    from tests.conftest import make_settings

    settings = make_settings(backend, tmp_path, request)
    root = tmp_path / "many"
    n = 5000 if backend == "local" else 1500  # enough to still be running at 256 committed (S3 is slower)
    for i in range(n):
        write(root / f"c{i % 3}" / f"{i:05d}.png", imagegen.png_bytes((i % 256, (i // 256) % 256, 7), size=(16, 16)))
    run_cli(settings, "apps", "create", "crash", check=True)
    env = {**os.environ, **settings.as_env()}
    proc = subprocess.Popen([sys.executable, "-m", "deeptrain.cli.main", "inputs", "import", "crash", str(root),
                             "--format", "imagefolder", "--json"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    store = open_store(settings.database_url)
    deadline = time.time() + 120
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        with store.session() as s:
            committed = s.scalar(select(func.count()).select_from(Input))
        if committed >= 256:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "import finished before it could be killed; make the test data larger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    from deeptrain.sdk import Client

    client = Client(settings)
    rows = _rows(client, "crash")
    assert 0 < len(rows) < n
    for row in rows:  # every visible input is complete
        assert client.ctx.storage.exists(row.storage_key)
    report = json.loads(run_cli(settings, "inputs", "import", "crash", str(root), "--format", "imagefolder",
                                "--json", check=True).stdout)
    assert report["imported"] + report["duplicates"] == n
    assert report["duplicates"] == len(rows)
    assert len(_rows(client, "crash")) == n
    assert_consistent(client, "crash")
