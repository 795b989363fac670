"""Remote mode: ``Client()`` with ``DEEPTRAIN_API_URL`` is a ``RemoteClient`` over the server's HTTP API, with the
same methods, typed results and exceptions as the embedded client.

The server here is the control plane in process (``serve.v2.control.control_api``, no Ray) behind a
``fastapi.testclient.TestClient`` (an ``httpx.Client``) handed to the remote client; embedded and remote
clients share one deployment, so their answers are compared directly. There is no Ray cluster in process:
training and tuning answer the cluster error there; the whole loop against a real ``deeptrain serve`` (S3 +
PostgreSQL, Ray: training, tuning, predictions) is ``tests/test_clarifai_client.py``'s remote CLI test.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient

from deeptrain.errors import ClusterError, Conflict, DeeptrainError, Forbidden, InvalidInput, NotFound, Unauthorized
from deeptrain.remote import LOCAL_ONLY, RemoteClient
from deeptrain.remote.transport import Transport
from deeptrain.sdk import Client
from deeptrain.services import keys as key_service
from deeptrain.services.context import Context
from serve.v2.control import control_api
from serve.v2.state import Services
from tests.imagegen import png_bytes

URL = "http://testserver"


@pytest.fixture
def world(local_settings):
    ctx = Context.from_settings(local_settings)
    user_key = key_service.create_user_key(ctx)["key"]
    http = TestClient(control_api(Services(ctx)), raise_server_exceptions=False)

    def remote(key: str | None = user_key) -> RemoteClient:
        return RemoteClient(local_settings.replace(api_url=URL, api_key=key), http=http)

    return SimpleNamespace(local=Client(local_settings), remote=remote(), connect=remote, ctx=ctx, http=http,
                           settings=local_settings)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    """300 Fashion-MNIST PNGs (30 per class, 3 requests' worth) plus a non-image and a stray file."""
    from deeptrain.sample_data import write_fashion_mnist_folder

    root = tmp_path_factory.mktemp("remote-fashion") / "images"
    write_fashion_mnist_folder(root, "test", per_class=30)
    (root / "Shirt" / "broken.png").write_bytes(b"not a png")
    (root / "stray.txt").write_text("outside any concept folder")
    return root


# --- settings and the client's surface -------------------------------------------------------------------------

def test_client_is_remote_with_an_api_url_and_never_passes_it_on(local_settings):
    remote_settings = local_settings.replace(api_url="http://server:8000/", api_key="dtk_x_y")
    client = Client(remote_settings)
    assert isinstance(client, RemoteClient) and client.transport.url == "http://server:8000"
    assert not {"DEEPTRAIN_API_URL", "DEEPTRAIN_API_KEY"} & set(remote_settings.as_env())  # a Ray job stays local
    assert remote_settings.replace(import_workers=2).api_url == "http://server:8000/"
    assert "dtk_x_y" not in repr(remote_settings)
    assert isinstance(Client(local_settings), Client)


def test_every_client_method_exists_remotely():
    public = {n for n in dir(Client) if not n.startswith("_")} - {"ctx"}
    assert public <= set(dir(RemoteClient)), sorted(public - set(dir(RemoteClient)))


@pytest.mark.parametrize("name", sorted(LOCAL_ONLY))
def test_methods_without_a_route_refuse_naming_the_setting(world, name):
    with pytest.raises(InvalidInput, match="not available with DEEPTRAIN_API_URL: run it on the server host"):
        getattr(world.remote, name)("a", "b", "c")


# --- apps, concepts, keys ---------------------------------------------------------------------------------------

def test_apps_and_concepts_read_the_same_remotely(world):
    world.remote.create_app("alpha", "Alpha")
    world.remote.create_concept("alpha", "cat", "Cat")
    world.local.create_app("beta")
    assert world.remote.list_apps() == world.local.list_apps()
    assert world.remote.get_app("alpha") == world.local.get_app("alpha")
    assert world.remote.list_concepts("alpha") == world.local.list_concepts("alpha")
    assert world.remote.delete_app("beta") == {"id": "beta", "deleted": True}
    assert [a.id for a in world.local.list_apps()] == ["alpha"]


def test_keys_are_created_listed_and_revoked_remotely(world):
    world.local.create_app("alpha")
    key = world.remote.create_key("alpha", ["predict", "inputs"], "laptop")
    assert key.key.startswith("dtk_") and key.scopes == ["predict", "inputs"] and key.kind == "app"
    assert world.remote.list_keys("alpha") == world.local.list_keys("alpha")
    assert world.remote.revoke_key("alpha", key.id).revoked_at is not None
    with pytest.raises(InvalidInput, match="user key is made on the server host"):
        world.remote.create_user_key()


ERRORS = [  # (what, the call, the exception a local call raises too)
    ("missing app", lambda w: w.remote.get_app("nope"), NotFound),
    ("duplicate app", lambda w: w.remote.create_app("alpha"), Conflict),
    ("bad app id", lambda w: w.remote.create_app("Bad Id!"), InvalidInput),
    ("unknown key", lambda w: w.connect("dtk_0000_nope").list_apps(), Unauthorized),
    ("no key", lambda w: w.connect(None).list_apps(), Unauthorized),
    ("key of another app", lambda w: w.connect(w.local.create_key("beta", ["inputs"]).key).list_concepts("alpha"),
     Forbidden),
    ("key without the scope", lambda w: w.connect(w.local.create_key("alpha", ["predict"]).key).list_concepts("alpha"),
     Forbidden),
    ("missing input", lambda w: w.remote.get_input("alpha", "nope"), NotFound),
]


@pytest.mark.parametrize(("what", "call", "error"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_come_back_as_the_same_exceptions(world, what, call, error):
    world.local.create_app("alpha")
    world.local.create_app("beta")
    with pytest.raises(error) as raised:
        call(world)
    assert str(raised.value)  # the server's message, whole


# --- inputs -----------------------------------------------------------------------------------------------------

def _strip(inputs) -> list[dict]:
    return [{k: v for k, v in i.items() if k not in ("source", "created_at")} for i in inputs]


def test_import_reports_and_stores_what_an_embedded_import_does(world, fashion):
    world.local.create_app("here")
    world.local.create_app("there")
    ticks: list[int] = []
    remote = world.remote.import_inputs("there", fashion, "imagefolder", on_progress=ticks.append)
    local = world.local.import_inputs("here", fashion, "imagefolder")
    for field in ("imported", "duplicates", "updated", "differing_labels"):
        assert remote[field] == local[field], field
    assert remote.imported == 300 and sum(ticks) == 302
    assert sorted(map(dict, remote.rejected), key=str) == sorted(map(dict, local.rejected), key=str)
    assert {r.file for r in remote.rejected} == {str(fashion / "Shirt" / "broken.png"), str(fashion / "stray.txt")}
    assert _strip(world.remote.list_inputs("there")) == _strip(world.local.list_inputs("here"))
    again = world.remote.import_inputs("there", fashion, "imagefolder", split="train")
    assert (again.imported, again.duplicates, len(again.rejected)) == (0, 300, 2)


def test_relabelled_duplicates_are_counted_or_updated(world, tmp_path):
    world.local.create_app("alpha")
    for concept, color in (("red", (200, 0, 0)), ("blue", (0, 0, 200))):
        (tmp_path / "a" / concept).mkdir(parents=True)
        (tmp_path / "a" / concept / "x.png").write_bytes(png_bytes(color))
    world.remote.import_inputs("alpha", tmp_path / "a", "imagefolder")
    (tmp_path / "a" / "red" / "x.png").rename(tmp_path / "a" / "blue" / "y.png")  # red's image is now labelled blue
    kept = world.remote.import_inputs("alpha", tmp_path / "a", "imagefolder")
    assert (kept.duplicates, kept.differing_labels, kept.updated) == (2, 1, 0)
    updated = world.remote.import_inputs("alpha", tmp_path / "a", "imagefolder", update_labels=True)
    assert (updated.duplicates, updated.updated) == (2, 1)
    assert sorted(c for i in world.local.list_inputs("alpha") for c in i.concepts) == ["blue", "blue"]


def test_one_input_is_added_labelled_read_and_deleted(world, tmp_path):
    world.local.create_app("alpha")
    image = png_bytes((10, 200, 10))
    added = world.remote.add_input("alpha", image, concepts=["Green Thing"], negatives=["red"], input_id="g1",
                                   regions=[{"concept": "leaf", "top_row": 0.1, "left_col": 0.1, "bottom_row": 0.5,
                                             "right_col": 0.6}], metadata={"k": 1}, split="val")
    assert (added.imported, added.rejected) == (1, [])
    got = world.remote.get_input("alpha", "g1")
    assert {k: v for k, v in got.items() if k != "source"} == {
        k: v for k, v in world.local.get_input("alpha", "g1").items() if k != "source"}
    assert got.concepts == ["green-thing"] and got.negatives == ["red"] and got.split == "validation"
    assert got.metadata == {"k": 1} and got.regions[0].concept == "leaf"
    assert world.remote.get_input_bytes("alpha", "g1") == image
    assert world.remote.label_input("alpha", "g1", ["blue"], negative=True).negatives == ["red", "blue"]
    assert world.remote.unlabel_input("alpha", "g1", ["red"]).negatives == ["blue"]
    assert world.remote.list_inputs("alpha", limit=1, offset=0)[0].id == "g1"
    assert world.remote.delete_input("alpha", "g1") == {"id": "g1", "deleted": True}
    assert world.local.list_inputs("alpha") == []
    refused = world.remote.add_input("alpha", b"GIF89a nonsense")
    assert refused.imported == 0 and "<bytes>" == refused.rejected[0].file


def test_an_import_into_a_missing_app_reads_nothing(world, fashion):
    with pytest.raises(NotFound, match="app 'nope' does not exist"):
        world.remote.import_inputs("nope", fashion, "imagefolder", on_progress=lambda n: pytest.fail("read"))


# --- transport ------------------------------------------------------------------------------------------------------

def test_connection_failures_are_retried_then_a_cluster_error(monkeypatch):
    calls = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("refused", request=request)

    transport = Transport("http://server:1", "k", httpx.Client(base_url="http://server:1",
                                                                transport=httpx.MockTransport(refuse)), delays=(0, 0))
    with pytest.raises(ClusterError, match="cannot reach the deeptrain server at http://server:1"):
        transport.call("POST", "/v2/users/me/apps", body={})
    assert len(calls) == 3


def test_a_plain_unavailable_answer_is_retried_for_reads_only():
    answers = iter([httpx.Response(503, text="no replicas"), httpx.Response(200, json={"status": {"code": 10000}})])
    http = httpx.Client(base_url="http://s", transport=httpx.MockTransport(lambda request: next(answers)))
    assert Transport("http://s", None, http, delays=(0,)).call("GET", "/v2/x") == {"status": {"code": 10000}}
    plain = httpx.Client(base_url="http://s", transport=httpx.MockTransport(lambda r: httpx.Response(503, text="x")))
    with pytest.raises(ClusterError, match="without a deeptrain answer"):
        Transport("http://s", None, plain, delays=(0,)).call("POST", "/v2/x", body={})


def test_a_url_that_is_not_a_deeptrain_server_says_so():
    http = httpx.Client(base_url="http://s", transport=httpx.MockTransport(lambda r: httpx.Response(404, text="<h1>")))
    with pytest.raises(NotFound, match="is DEEPTRAIN_API_URL a deeptrain server"):
        Transport("http://s", None, http).call("GET", "/v2/users/me/apps")
    with pytest.raises(InvalidInput, match="not an http"):
        Transport("server:8000", None)


# --- predictions read back -------------------------------------------------------------------------------------------

RAW_OUTPUTS = [
    ("classification", {"concepts": [{"id": "cat", "value": 0.75}, {"id": "dog", "value": 0.25}]}),
    ("detection", {"regions": [{"bounding_box": {"top_row": 0.1, "left_col": 0.2, "bottom_row": 0.5,
                                                 "right_col": 0.6}, "concept": "cat", "value": 0.9}]}),
    ("embedding", {"embedding": [0.5, -0.25, 0.125]}),
]


@pytest.mark.parametrize(("task", "raw"), RAW_OUTPUTS, ids=[t for t, _ in RAW_OUTPUTS])
def test_a_served_output_reads_back_as_the_local_prediction(task, raw):
    from deeptrain.remote.client_infer import prediction
    from serve.responses import outputs_response
    from serve.schemas import OutputConfig

    inputs = [SimpleNamespace(id="0", data=SimpleNamespace(image=SimpleNamespace(input_id=None)))]
    body = json.loads(json.dumps(outputs_response(inputs, [raw], task, "m", "v", OutputConfig(), {"cat": "Cat"})))
    assert prediction(body["outputs"][0]) == raw


# --- training: a real run over a real server is tests/test_clarifai_client.py's remote CLI test -----------------

def test_bad_params_are_refused_by_the_server_before_anything_is_queued(world, fashion):
    world.local.create_app("fashion")
    world.local.import_inputs("fashion", fashion, "imagefolder")
    world.local.create_model("fashion", "clf", "classification", "ResNext", {"num_epochs": 2})
    with pytest.raises(InvalidInput, match="batch_sise"):
        world.remote.train("fashion", "clf", {"batch_sise": 32})
    assert world.local.list_versions("fashion", "clf") == []


@pytest.fixture
def remote_cli(world, monkeypatch):
    """``deeptrain.cli.main.main`` in remote mode: only DEEPTRAIN_API_URL/KEY set, its HTTP client the in-process
    server's."""
    from deeptrain.cli.main import main

    for variable in [v for v in __import__("os").environ if v.startswith("DEEPTRAIN_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setattr("deeptrain.remote.transport.httpx.Client", lambda **_: world.http)
    monkeypatch.setenv("DEEPTRAIN_API_URL", URL)
    monkeypatch.setenv("DEEPTRAIN_API_KEY", world.remote.transport._headers["Authorization"].split()[1])
    monkeypatch.chdir(world.settings.home.parent)  # a remote client's own home stays empty
    return main


def test_the_cli_imports_remotely_with_a_progress_bar_and_the_same_report(world, fashion, remote_cli, capsys):
    assert remote_cli(["apps", "create", "fashion", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "fashion"
    assert remote_cli(["inputs", "import", "fashion", str(fashion), "-f", "imagefolder", "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert (report["imported"], len(report["rejected"])) == (300, 2) and "302/302" in err
    assert remote_cli(["inputs", "import", "nope", str(fashion), "-f", "imagefolder"]) == 3
    assert "app 'nope' does not exist" in capsys.readouterr().err
    assert remote_cli(["gc", "--yes"]) == 2
    assert "gc is not available with DEEPTRAIN_API_URL" in capsys.readouterr().err


def test_the_cli_refuses_what_needs_the_server_host(remote_cli, capsys):
    main = remote_cli
    assert main(["models", "train", "fashion", "clf", "--resume", "0123abcd"]) == 2
    assert "--resume is not available with DEEPTRAIN_API_URL" in capsys.readouterr().err
    assert main(["keys", "create", "--user", "--json"]) == 2
    assert "made on the server host" in capsys.readouterr().out


def test_keys_create_user_prints_a_user_key_on_the_server_host(local_settings, monkeypatch, capsys):
    from deeptrain.cli.main import main

    for variable, value in local_settings.as_env().items():
        monkeypatch.setenv(variable, value)
    assert main(["keys", "create", "--user", "--name", "laptop", "--json"]) == 0
    key = json.loads(capsys.readouterr().out)
    assert key["key"].startswith("dtk_") and key["kind"] == "user" and key["app_id"] is None
    assert key_service.authenticate(Context.from_settings(local_settings), f"Key {key['key']}")["kind"] == "user"
    assert main(["keys", "create", "alpha", "--user"]) == 2


# --- tuning and jobs: a real search over a real server is tests/test_clarifai_client.py's remote CLI test ---------

JOB = "deeptrain-job-0f0f0f0f"


def test_ray_tune_domains_go_to_the_server_as_the_cli_writes_them():
    from deeptrain.remote.client_jobs import space_specs
    from deeptrain.tune_space import parse_space

    items = ["lrate=loguniform:0.0001:0.1", "batch_size=choice:16,32", "num_epochs=randint:2:6"]
    assert space_specs(parse_space(items)) == dict(i.split("=") for i in items)


def test_without_a_cluster_a_search_is_a_cluster_error_after_the_checks_a_local_one_makes(world, monkeypatch):
    from deeptrain.tune_space import parse_space

    for variable in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(variable, raising=False)
    world.local.create_app("fashion")
    world.local.create_model("fashion", "clf", "classification", "ResNext", {"num_epochs": 2})
    for bad in ("lrat=loguniform:1e-4:1e-1", "lrate=sometimes:1:2", "lrate=loguniform:1e-4"):
        with pytest.raises(InvalidInput) as local:
            parse_space([bad])
        name, spec = bad.split("=")
        with pytest.raises(InvalidInput) as remote:
            world.remote.tune("fashion", "clf", {name: spec}, trials=2)
        assert str(remote.value) == str(local.value)
    with pytest.raises(ClusterError, match="no Ray cluster"):
        world.remote.tune("fashion", "clf", {"lrate": "loguniform:1e-4:1e-1"}, trials=2)
    with pytest.raises(ClusterError):
        world.remote.get_job(JOB)
    assert world.remote.list_tune_runs("fashion", "clf") == []


def test_a_concept_is_deleted_remotely_as_locally(world):
    world.local.create_app("alpha")
    world.local.create_app("beta")
    world.local.add_input("alpha", png_bytes((1, 2, 3)), concepts=["cat"])
    for app in ("alpha", "beta"):
        world.local.create_concept(app, "dog", "Dog")
    with pytest.raises(Conflict, match="used by 1 annotation"):
        world.remote.delete_concept("alpha", "cat")
    assert world.remote.delete_concept("alpha", "dog") == world.local.delete_concept("beta", "dog") == {
        "id": "dog", "name": "Dog", "deleted": True, "annotations_deleted": 0}
    assert world.remote.delete_concept("alpha", "cat", force=True).annotations_deleted == 1
    assert world.local.list_concepts("alpha") == [] and world.local.get_input("alpha", world.local.list_inputs(
        "alpha")[0].id).concepts == []
    with pytest.raises(NotFound, match="concept 'cat' does not exist"):
        world.remote.delete_concept("alpha", "cat")
