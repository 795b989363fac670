"""The web console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through Selenium)
against the real server (``deeptrain serve``: Ray Serve on a local Ray cluster, SeaweedFS S3, PostgreSQL) over
loopback — what a user does, checked through the public API afterwards:

sign in, create an app, upload 200 Fashion-MNIST PNGs through the file input, label a batch by selection,
draw two boxes on a deepforest aerial tile and read them back (within 1 px), label 20 images with the keyboard
only, create a ResNext model from the form (image_size 32, 2 epochs) and watch its progress charts update,
open its evaluation and mistakes, predict an uploaded image, manage keys; every form shows the server's
refusal next to the field; a page survives 4xx/5xx answers. Each page's screenshot is saved
(``tests/browser.py``: ``build/console-screenshots/``).

The tests of this module run in order and share one server, one browser and the apps they build.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from deeptrain.config import Settings
from deeptrain.ids import slugify
from deeptrain.sdk import Client
from deeptrain.services import keys as key_service
from tests.browser import chromium, js_errors, screenshot, wait_for
from tests.conftest import aws_env

pytestmark = pytest.mark.ray

PER_CLASS = 20  # 10 classes: 200 real Fashion-MNIST PNGs
APP, TREES, KEYBOARD = "fashion", "trees", "kb"
MODEL = "fashion-resnext"


@pytest.fixture(scope="module")
def server(tmp_path_factory, ray_cluster, s3_server, s3_bucket, pg_server):
    """``deeptrain serve`` on S3 + PostgreSQL over loopback, and a user key made on the server host."""
    from serve.app import start, stop
    from tests.test_clarifai_client import _free_port

    name = f"console_{uuid.uuid4().hex[:10]}"
    patch = pytest.MonkeyPatch()
    for k, v in aws_env(s3_server).items():
        patch.setenv(k, v)
    settings = Settings.from_env(env={
        "DEEPTRAIN_HOME": str(tmp_path_factory.mktemp("console") / "home"),
        "DEEPTRAIN_STORAGE": f"s3://{s3_bucket}/{name}",
        "DEEPTRAIN_DATABASE_URL": pg_server.create_database(name)})
    client = Client(settings)
    key = key_service.create_user_key(client.ctx, "console test")["key"]
    url = start(settings, "127.0.0.1", _free_port(), predictor_cpus=0)
    yield {"url": url, "key": key, "client": client}
    stop()
    patch.undo()


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def failure_screenshot(request, browser):
    """A failed test leaves the page it failed on as ``FAILED-<test>.png``."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        screenshot(browser, f"FAILED-{request.node.name}")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, list[Path]]:
    """Fashion-MNIST PNGs by concept (train), a few test PNGs, and deepforest aerial tiles."""
    from deeptrain.sample_data import write_deepforest_tiles, write_fashion_mnist_folder

    root = tmp_path_factory.mktemp("console-images")
    write_fashion_mnist_folder(root / "train", "train", per_class=PER_CLASS)
    write_fashion_mnist_folder(root / "test", "test", per_class=2)
    write_deepforest_tiles(root / "trees", ["OSBS_029"], tile=200)
    by_concept = {slugify(d.name): sorted(d.glob("*.png")) for d in sorted((root / "train").iterdir())}
    return {**by_concept, "_test": sorted((root / "test").rglob("*.png")),
            "_trees": sorted((root / "trees" / "JPEGImages").iterdir())}


def api(server, method: str, path: str, **kwargs):
    r = httpx.request(method, server["url"] + path, headers={"Authorization": f"Key {server['key']}"},
                      timeout=60, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


def by(css: str):
    from selenium.webdriver.common.by import By

    return By.CSS_SELECTOR, css


def find(driver, css: str, timeout: float = 20.0):
    return wait_for(f"element {css}", lambda: _visible(driver, css), timeout)


def attribute(driver, css: str, name: str, timeout: float = 20.0) -> str:
    """``name`` of the first visible ``css`` element, read in the same try as the lookup: a page that re-renders
    between finding an element and reading it (a live table) makes a found element stale."""
    def read():
        element = _visible(driver, css)
        return element.get_attribute(name) if element is not None else None

    return wait_for(f"{name} of {css}", read, timeout)


def click(driver, css: str, timeout: float = 20.0) -> None:
    """Click the first visible ``css`` element, looking it up again if the page re-rendered it meanwhile."""
    wait_for(f"a click on {css}", lambda: _visible(driver, css).click() or True, timeout)


def _visible(driver, css: str):
    found = driver.find_elements(*by(css))
    # a file input is hidden behind its button: present is enough
    return found[0] if found and (found[0].is_displayed() or found[0].get_attribute("type") == "file") else None


def open_page(driver, server, path: str, ready: str, name: str | None = None):
    driver.get(server["url"] + path)
    element = find(driver, ready)
    if name:
        screenshot(driver, name)
    return element


def upload(driver, files: list[Path], concept: str = "", split: str = "") -> str:
    """Upload ``files`` through ``#file-input`` with the page's options; the final status text."""
    from selenium.webdriver.support.ui import Select

    concept_box = find(driver, "#upload-concept")
    concept_box.clear()
    if concept:
        concept_box.send_keys(concept)
    Select(driver.find_element(*by("#upload-split"))).select_by_value(split)
    driver.find_element(*by("#file-input")).send_keys("\n".join(str(f) for f in files))
    n = len(files)
    return wait_for(f"{n} uploads", lambda: (t := driver.find_element(*by("#upload-status")).text)
                    .startswith(f"{n}/{n}") and t, timeout=120)


# --- sign in, apps ------------------------------------------------------------------------------------------

def test_sign_in_refuses_a_bad_key_with_the_servers_message_then_lists_apps(server, browser):
    open_page(browser, server, "/", "#key", "01-sign-in")
    find(browser, "#key").send_keys("dtk_not_a_real_key")
    browser.find_element(*by("#signin-submit")).click()
    error = wait_for("the refusal next to the key", lambda: browser.find_element(
        *by('.field-error[data-for="key"]')).text)
    assert "key" in error.lower()
    field = browser.find_element(*by("#key"))
    field.clear()
    field.send_keys(server["key"])
    browser.find_element(*by("#signin-submit")).click()
    find(browser, "#create-app")
    assert not js_errors(browser)


def test_create_app_from_the_form_and_a_bad_id_is_refused_next_to_the_field(server, browser):
    form_id = find(browser, "#app-id")
    form_id.send_keys("Not An Id!")
    browser.find_element(*by("#create-app-submit")).click()
    refusal = wait_for("the refusal", lambda: browser.find_element(*by('.field-error[data-for="id"]')).text)
    assert "invalid app id" in refusal
    for app in (APP, TREES, KEYBOARD):
        form_id = browser.find_element(*by("#app-id"))
        form_id.clear()
        form_id.send_keys(app)
        browser.find_element(*by("#create-app-submit")).click()
        wait_for(f"app {app} listed", lambda: browser.find_elements(*by(f'#apps-table a[href="/apps/{app}/inputs"]')))
    screenshot(browser, "02-apps")
    assert {a["id"] for a in api(server, "GET", "/v2/apps")["apps"]} >= {APP, TREES, KEYBOARD}


# --- inputs and labelling -----------------------------------------------------------------------------------

def test_upload_200_fashion_mnist_pngs_through_the_file_input(server, browser, images):
    open_page(browser, server, f"/apps/{APP}/inputs", "#drop")
    concepts = [c for c in images if not c.startswith("_")]
    for concept in concepts[:-1]:  # the last class goes up unlabelled: the next test labels it by selection
        status = upload(browser, images[concept], concept=concept, split="")
        assert "0 rejected" in status, status
    upload(browser, images[concepts[-1]], split="")
    rejected = upload(browser, [images["_trees"][0].parent.parent / "Annotations" /
                                next((images["_trees"][0].parent.parent / "Annotations").iterdir()).name])
    assert "1 rejected" in rejected
    assert browser.find_elements(*by("#upload-rejected li")), "the rejected file's reason is listed"
    screenshot(browser, "03-inputs-uploaded")
    counts = api(server, "GET", f"/v2/apps/{APP}/inputs/counts")["counts"]
    assert counts["total"] == 10 * PER_CLASS and counts["unlabelled"] == PER_CLASS


def test_label_a_batch_by_selection(server, browser, images):
    from selenium.webdriver.support.ui import Select

    concept = [c for c in images if not c.startswith("_")][-1]
    open_page(browser, server, f"/apps/{APP}/inputs?labelled=false", "#grid .thumb")
    assert Select(browser.find_element(*by("#filter-labelled"))).first_selected_option.get_attribute("value") == "false"
    wait_for("20 unlabelled thumbnails", lambda: len(browser.find_elements(*by("#grid .thumb"))) == PER_CLASS)
    browser.find_element(*by("#select-page")).click()
    assert f"{PER_CLASS} selected" in browser.find_element(*by("#selection-count")).text
    bulk = browser.find_element(*by("#bulk-concept"))
    bulk.clear()
    bulk.send_keys(concept)
    browser.find_element(*by("#add-positive")).click()
    wait_for("the unlabelled filter empties", lambda: not browser.find_elements(*by("#grid .thumb")))
    screenshot(browser, "04-labelled-by-selection")
    counts = api(server, "GET", f"/v2/apps/{APP}/inputs/counts", params={"concept_id": concept})["counts"]
    assert counts["matching"] == PER_CLASS
    assert api(server, "GET", f"/v2/apps/{APP}/inputs/counts")["counts"]["unlabelled"] == 0


def _drag(browser, element, start: tuple[int, int], end: tuple[int, int]) -> None:
    """Press at ``start`` and release at ``end`` (pixels from the element's top-left corner)."""
    from selenium.webdriver.common.action_chains import ActionChains

    w, h = element.size["width"], element.size["height"]
    cx, cy = w / 2, h / 2  # Selenium 4 offsets are from the element's centre
    (ActionChains(browser).move_to_element_with_offset(element, int(start[0] - cx), int(start[1] - cy))
     .click_and_hold().move_by_offset(10, 10)
     .move_to_element_with_offset(element, int(end[0] - cx), int(end[1] - cy)).release().perform())


def test_draw_two_boxes_and_read_them_back_within_one_pixel(server, browser, images):
    open_page(browser, server, f"/apps/{TREES}/inputs", "#drop")
    upload(browser, images["_trees"][:1])
    input_id = api(server, "GET", f"/v2/apps/{TREES}/inputs")["inputs"][0]["id"]
    open_page(browser, server, f"/apps/{TREES}/inputs/{input_id}", "#stage img#image")
    image = wait_for("the image loaded", lambda: (i := browser.find_element(*by("#image"))).get_property(
        "naturalWidth") and i)
    find(browser, "#add-box-concept").send_keys("tree\n")
    wait_for("concept tree picked", lambda: browser.find_element(*by("#box-concept")).get_attribute("value") == "tree")
    drawn = [((20, 30), (120, 110)), ((150, 60), (190, 180))]
    for start, end in drawn:
        _drag(browser, image, start, end)
        time.sleep(0.3)
    wait_for("two boxes saved", lambda: len(browser.find_elements(*by("rect.box[data-annotation]"))) == 2)
    wait_for("saved", lambda: "saved" in browser.find_element(*by("#saved")).text)
    screenshot(browser, "05-boxes-drawn")
    w, h = image.size["width"], image.size["height"]
    regions = api(server, "GET", f"/v2/apps/{TREES}/inputs/{input_id}")["input"]["data"]["regions"]
    got = sorted((r["region_info"]["bounding_box"] for r in regions), key=lambda b: b.get("left_col", 0))
    assert len(got) == 2
    for box, ((x0, y0), (x1, y1)) in zip(got, drawn):
        assert abs(box.get("left_col", 0) * w - x0) <= 1 and abs(box.get("top_row", 0) * h - y0) <= 1, (box, w, h)
        assert abs(box["right_col"] * w - x1) <= 1 and abs(box["bottom_row"] * h - y1) <= 1, (box, w, h)
    assert all(r["data"]["concepts"][0]["id"] == "tree" for r in regions)


def test_keyboard_only_labelling_of_20_images(server, browser, images):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    files = images["_test"][:20]
    open_page(browser, server, f"/apps/{KEYBOARD}/inputs", "#drop")
    upload(browser, files)
    api(server, "POST", f"/v2/apps/{KEYBOARD}/concepts", json={"concepts": [{"id": "shirt"}, {"id": "shoe"}]})
    first = api(server, "GET", f"/v2/apps/{KEYBOARD}/inputs", params={"per_page": 1})["inputs"][0]["id"]
    open_page(browser, server, f"/apps/{KEYBOARD}/inputs/{first}?pos=0", "#labels .label-chip")
    seen: list[str] = []
    for k in range(len(files)):
        current = wait_for("the next input's page, ready", lambda: browser.execute_script(
            "return document.body.dataset.ready === '1' && document.body.dataset.input") not in (False, None, *seen[-1:])
            and browser.execute_script("return document.body.dataset.input"))
        seen.append(current)
        key = "1" if k % 2 == 0 else "2"
        ActionChains(browser).send_keys(key).send_keys("p").perform()
        concept = "shirt" if key == "1" else "shoe"
        wait_for(f"{concept} positive", lambda: browser.find_element(
            *by(f'.label-chip[data-concept="{concept}"]')).get_attribute("data-state") == "positive")
        if k < len(files) - 1:
            ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
    screenshot(browser, "06-keyboard-labelling")
    assert len(set(seen)) == len(files)
    shirts = api(server, "GET", f"/v2/apps/{KEYBOARD}/inputs/counts", params={"concept_id": "shirt"})["counts"]
    shoes = api(server, "GET", f"/v2/apps/{KEYBOARD}/inputs/counts", params={"concept_id": "shoe"})["counts"]
    assert (shirts["matching"], shoes["matching"]) == (10, 10)


# --- models: the form, training, live charts -----------------------------------------------------------------

def _model_form(browser, server, model_id: str, fields: dict[str, str], extra: str = "", train: bool = True):
    from selenium.webdriver.common.by import By

    open_page(browser, server, f"/apps/{APP}/models/new", 'input[name="task"][value="classification"]')
    browser.find_element(*by('input[name="task"][value="classification"]')).click()
    find(browser, '.template-card[data-template="ResNext"]').click()
    find(browser, "#model-form")
    model_box = browser.find_element(*by("#model-id"))
    model_box.clear()
    model_box.send_keys(model_id)
    for details in browser.find_elements(By.CSS_SELECTOR, "#params details"):
        if details.get_attribute("open") is None:
            details.find_element(By.TAG_NAME, "summary").click()
    for name, value in fields.items():
        box = browser.find_element(*by(f'#params [name="{name}"]'))
        box.clear()
        box.send_keys(value)
    extra_box = browser.find_element(*by("#extra-params"))
    extra_box.clear()
    if extra:
        extra_box.send_keys(extra)
    train_now = browser.find_element(*by("#train-now"))
    if train_now.is_selected() != train:
        train_now.click()
    browser.find_element(*by("#create-model")).click()


def _field_error(browser, name: str, form: str = "") -> str:
    return browser.find_element(*by(f'{form} .field-error[data-for="{name}"]'.strip())).text


@pytest.mark.parametrize("fields, extra, where, words", [
    ({"image_size": "31"}, "", "image_size", ["image_size"]),
    ({"lrate": "0.1", "per_item_lrate": "0.001"}, "", "per_item_lrate", ["lrate"]),
    ({}, "lrat=0.1", ".form-error", ["lrat"]),
], ids=["out-of-range", "two-learning-rates", "unknown-parameter"])
def test_the_model_form_shows_the_servers_refusal_next_to_the_field(server, browser, fields, extra, where, words):
    _model_form(browser, server, f"refused-{uuid.uuid4().hex[:6]}", fields, extra)
    if where.startswith("."):
        text = wait_for("the form's error", lambda: browser.find_element(*by(f"#model-form {where}")).text)
    else:
        text = wait_for(f"the error next to {where}", lambda: _field_error(browser, where))
    assert all(w in text for w in words), text
    screenshot(browser, f"07-model-form-refusal-{where.strip('.')}")
    assert browser.current_url.endswith("/models/new"), "a refused form stays on its page"
    assert not js_errors(browser)


def test_create_a_resnext_model_from_the_form_and_watch_it_train(server, browser):
    _model_form(browser, server, MODEL, {"image_size": "32", "num_epochs": "2", "batch_size": "16",
                                         "num_items_per_epoch": "320", "lrate": "0.05"})
    wait_for("the model page", lambda: browser.current_url.endswith(f"/models/{MODEL}"), timeout=60)
    version_id = attribute(browser, "#versions tr[data-version]", "data-version", timeout=60)
    updates: set[str] = set()

    def trained() -> bool:
        chart = browser.find_elements(*by("#chart-loss"))
        status = browser.find_element(*by(f'#versions tr[data-version="{version_id}"] .pill')).text
        if chart and status == "training":
            updates.add(chart[0].get_attribute("data-updates") or "")
            if len(updates) == 2:
                screenshot(browser, "08-model-training")
        return status == "trained"

    wait_for("the version trained", trained, timeout=900, every=0.25)
    assert len(updates - {""}) >= 2, f"the loss chart updated {len(updates - {''})} times while training"
    screenshot(browser, "09-model-trained")
    version = api(server, "GET", f"/v2/apps/{APP}/models/{MODEL}/versions/{version_id}")["model_version"]
    assert version["status"]["code"] == 21100 and version["train_info"]["params"]["image_size"] == 32
    assert version["train_info"]["params"]["num_epochs"] == 2


# --- evaluation, predict, keys, errors -----------------------------------------------------------------------

def _trained_version(server) -> str:
    versions = api(server, "GET", f"/v2/apps/{APP}/models/{MODEL}/versions")["model_versions"]
    return next(v["id"] for v in versions if v["status"]["code"] == 21100)


def test_the_evaluation_page_shows_metrics_confusion_and_the_mistakes(server, browser):
    version_id = _trained_version(server)
    open_page(browser, server, f"/apps/{APP}/models/{MODEL}/versions/{version_id}", "#metrics tr")
    details = api(server, "GET", f"/v2/apps/{APP}/models/{MODEL}/versions/{version_id}/evaluation")["evaluation"]
    wait_for("the per-concept table", lambda: len(browser.find_elements(*by("#per-concept tbody tr")))
             == len(details["concepts"]), timeout=120)
    assert len(browser.find_elements(*by("#confusion tbody tr"))) == len(details["concepts"])
    assert browser.find_elements(*by("#pr-curves path"))
    wait_for("the mistakes count", lambda: f"{details['num_mistakes']} mistakes" in
             browser.find_element(*by("#mistakes-count")).text, timeout=60)
    mistakes = browser.find_elements(*by("#mistakes .mistake"))
    assert details["num_mistakes"] > 0 and mistakes, "a 2-epoch model on 200 images makes mistakes"
    screenshot(browser, "10-evaluation")
    first = attribute(browser, "#mistakes .mistake", "data-input")
    click(browser, f'#mistakes .mistake[data-input="{first}"]')
    wait_for("the labeller of the mistake", lambda: f"/inputs/{first}" in browser.current_url)
    find(browser, "#stage img#image")
    assert not js_errors(browser)


def test_predict_an_uploaded_image_shows_the_top_concept(server, browser, images):
    import base64

    from selenium.webdriver.support.ui import Select

    sample = images["_test"][-1]
    open_page(browser, server, f"/apps/{APP}/predict", "#predict-file")
    wait_for("the model offered", lambda: any(MODEL in (o.get_attribute("value") or "") for o in
                                             Select(browser.find_element(*by("#predict-model"))).options))
    browser.find_element(*by("#predict-file")).send_keys(str(sample))
    top = attribute(browser, "#predictions li.prediction", "data-concept", timeout=120)
    body = {"inputs": [{"data": {"image": {"base64": base64.b64encode(sample.read_bytes()).decode()}}}]}
    expected = api(server, "POST", f"/v2/apps/{APP}/models/{MODEL}/outputs", json=body)
    best = expected["outputs"][0]["data"]["concepts"][0]["id"]
    assert top == best
    screenshot(browser, "11-predict")


def test_create_list_and_revoke_an_app_key(server, browser):
    open_page(browser, server, f"/apps/{APP}/keys", "#key-form")
    for scope in ("predict", "search"):
        box = browser.find_element(*by(f'#key-form input[name="scope"][value="{scope}"]'))
        if not box.is_selected():
            box.click()
    find(browser, "#key-description").send_keys("console test key")
    browser.find_element(*by("#key-create")).click()
    secret = wait_for("the new key", lambda: browser.find_element(*by("#new-key")).text)
    check = httpx.get(f"{server['url']}/v2/apps/{APP}/models", headers={"Authorization": f"Key {secret}"})
    assert check.status_code == 403, "a predict+search key cannot list models"
    predict = httpx.post(f"{server['url']}/v2/apps/{APP}/models/{MODEL}/outputs", json={"inputs": []},
                         headers={"Authorization": f"Key {secret}"})
    assert predict.status_code != 403
    row = wait_for("the key listed", lambda: [r for r in browser.find_elements(*by("#keys-table tr[data-key]"))
                                               if "console test key" in r.text])
    screenshot(browser, "12-keys")
    row[0].find_element(*by("button.revoke")).click()
    _accept_confirmation(browser)
    wait_for("revoked", lambda: httpx.get(f"{server['url']}/v2/apps/{APP}/inputs",
                                          headers={"Authorization": f"Key {secret}"}).status_code == 401)


@pytest.mark.parametrize("path", [
    f"/apps/{APP}/models/no-such-model",
    f"/apps/{APP}/models/{MODEL}/versions/no-such-version",
    "/apps/no-such-app/inputs",
    f"/apps/{APP}/inputs/no-such-input",
], ids=["model", "version", "app", "input"])
def test_a_page_of_something_missing_shows_the_servers_message_without_breaking(server, browser, path):
    browser.get(server["url"] + path)
    wait_for("the server's 'does not exist'", lambda: "does not exist" in browser.find_element(*by("main")).text
             or "does not exist" in browser.find_element(*by("#banner")).text)
    assert not js_errors(browser)


def _accept_confirmation(browser) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        browser.switch_to.alert.accept()
    except NoAlertPresentException:
        pass


def test_a_revoked_key_gets_the_servers_refusal_in_the_page(server, browser):
    client = server["client"]
    temporary = key_service.create_user_key(client.ctx, "short-lived")
    open_page(browser, server, "/", "body")
    browser.execute_script("localStorage.setItem('deeptrain.key', arguments[0])", temporary["key"])
    open_page(browser, server, f"/apps/{APP}/models", "#models-table")
    key_service.revoke_key(client.ctx, None, temporary["id"])  # in the store: the server's cache keeps the key
    wait_for("the revocation past DEEPTRAIN_SERVE_CACHE_TTL_S", lambda: httpx.get(  # for at most its TTL
        f"{server['url']}/v2/apps/{APP}/models", headers={"Authorization": f"Key {temporary['key']}"}).status_code == 401)
    browser.refresh()
    find(browser, "#banner")
    assert not js_errors(browser)
    browser.execute_script("localStorage.setItem('deeptrain.key', arguments[0])", server["key"])


def test_the_tuning_form_shows_the_servers_refusal_next_to_the_parameter(server, browser):
    open_page(browser, server, f"/apps/{APP}/models/{MODEL}", "#tune-form")
    space = find(browser, '#tune-form [name="lrate"]')
    space.clear()
    space.send_keys("loguniform:0.1:0.001")  # an empty range
    trials = browser.find_element(*by("#tune-trials"))
    trials.clear()
    trials.send_keys("2")
    browser.find_element(*by("#tune-start")).click()
    text = wait_for("the refusal next to lrate", lambda: _field_error(browser, "lrate", "#tune-form"))
    assert "lrate" in text and "0.1" in text, text
    screenshot(browser, "13-tuning-refusal")
    runs = api(server, "GET", f"/v2/apps/{APP}/models/{MODEL}/tune_runs")
    assert not runs.get("tune_runs"), "a refused search starts nothing"
    assert not js_errors(browser)
