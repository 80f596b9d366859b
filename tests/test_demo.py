"""The demo as a service: a real local Gradio server, driven the way a user's script drives it.

A tiny seed_cnn learns red, green and blue squares; then gradio_client asks the running app for
predictions (one at a time and in a burst), sends it broken uploads, calls every explain endpoint,
trains a new model from an uploaded zip, and checks what the server refuses to serve.
"""

import io
import socket
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from tlkit import demo_app, hookimpl  # noqa: E402
from tlkit.errors import TlkitError  # noqa: E402
from tlkit.plugins import get_registry  # noqa: E402

# Gradio's queue statistics use pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def square(path, colour, size=32):
    Image.new("RGB", (size, size), COLOURS[colour]).save(path)
    return str(path)


def serve(run_dir, runs_root, **kwargs):
    port = free_port()
    demo = demo_app.launch(run_dir, port=port, prevent_thread_lock=True, runs_root=str(runs_root), quiet=True,
                           **kwargs)
    return SimpleNamespace(demo=demo, port=port, url=f"http://127.0.0.1:{port}")


def api_error():
    from gradio_client.exceptions import AppError

    return AppError


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory, folder_factory):
    return folder_factory(tmp_path_factory.mktemp("colours") / "data", classes=tuple(COLOURS), per_class=8)


@pytest.fixture(scope="module")
def colour_run(colour_data, tmp_path_factory):
    from tlkit.cli import main

    run = tmp_path_factory.mktemp("runs") / "colours"
    assert main(["fit", str(colour_data), "--out", str(run), "--backbone", "seed_cnn", "--head", "gap",
                 "--image-size", "32", "--tune", "full", "--epochs", "6", "--lr", "0.01", "--quiet",
                 "--num-workers", "0"]) == 0
    return run


@pytest.fixture(scope="module")
def app(colour_run, tmp_path_factory):
    served = serve(colour_run, tmp_path_factory.mktemp("demo_runs"))
    yield served
    served.demo.close()


@pytest.fixture(scope="module")
def client(app):
    return Client(app.url, verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    return {colour: square(folder / f"{colour}.png", colour) for colour in COLOURS}


# -- predict -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("colour", list(COLOURS))
def test_predict_names_the_colour(client, images, colour):
    result = client.predict(handle_file(images[colour]), api_name="/predict")
    assert result["label"] == colour
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert set(confidences) == set(COLOURS)
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)


def test_predict_top_k(client, images):
    result = client.predict(handle_file(images["green"]), 1, api_name="/predict")
    assert [c["label"] for c in result["confidences"]] == ["green"]


def test_burst_of_concurrent_requests_all_answered(client, images):
    wanted = [list(COLOURS)[i % 3] for i in range(24)]

    def ask(colour):
        return client.predict(handle_file(images[colour]), api_name="/predict")["label"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(ask, wanted))
    assert answers == wanted


def test_api_endpoints_come_from_the_registry(client):
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    expected = {"/predict", "/train"} | {f"/{demo_app.endpoint_name(n)}" for n in get_registry("interpreters").names()}
    assert expected <= set(named)
    assert {"/explain_gradcam", "/explain_saliency", "/explain_integrated_gradients", "/explain_occlusion",
            "/explain_feature_maps", "/explain_filters"} <= set(named)
    assert set(named) == expected  # UI plumbing (tab switching, example clicks) is not part of the API


# -- bad uploads ------------------------------------------------------------------------------------
def test_bad_uploads_get_a_message_and_the_server_keeps_serving(client, images, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")

    for path, reason in [(text, "not an image"), (truncated, "truncated or corrupt"), (empty, "empty")]:
        with pytest.raises(api_error(), match=reason) as caught:
            client.predict(handle_file(str(path)), api_name="/predict")
        assert path.name in str(caught.value)
        assert "/tmp/gradio" not in str(caught.value)  # the server's paths stay private
        assert client.predict(handle_file(images["red"]), api_name="/predict")["label"] == "red"


def test_decompression_bomb_is_refused(client, images, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (16000, 16000)).save(bomb)  # 256 M pixels in a few kB, over Pillow's limit
    with pytest.raises(api_error(), match="decompression bomb"):
        client.predict(handle_file(str(bomb)), api_name="/predict")
    assert client.predict(handle_file(images["blue"]), api_name="/predict")["label"] == "blue"


# -- explain ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", get_registry("interpreters").names())
def test_every_explain_endpoint_returns_a_picture(client, images, method):
    options = "steps=3; filters=[0, 1, 2]" if method == "filters" else ""
    picture, summary = client.predict(handle_file(images["red"]), "predicted", "default", options,
                                      api_name=f"/{demo_app.endpoint_name(method)}")
    with Image.open(picture) as image:
        assert image.width > 100 and image.height > 100
    assert summary.startswith(f"{method}:")


def test_explain_a_chosen_class_and_layer(client, images):
    _, summary = client.predict(handle_file(images["red"]), "green", "backbone.3", "",
                                api_name="/explain_gradcam")
    assert "'green'" in summary and "backbone.3" in summary


def test_explain_mistakes_are_explained(client, images):
    with pytest.raises(api_error(), match="backbone.0"):  # lists the valid conv layers
        client.predict(handle_file(images["red"]), "predicted", "backbone.99", "", api_name="/explain_gradcam")
    with pytest.raises(api_error(), match="unknown target label 'purple'"):
        client.predict(handle_file(images["red"]), "purple", "default", "", api_name="/explain_saliency")
    with pytest.raises(api_error(), match="upload one"):
        client.predict(None, "predicted", "default", "", api_name="/explain_saliency")
    assert client.predict(handle_file(images["green"]), api_name="/predict")["label"] == "green"


def test_filters_need_no_image(client):
    picture, summary = client.predict(None, "predicted", "backbone.6", "steps=2; filters=[5]",
                                      api_name="/explain_filters")
    assert Path(picture).is_file() and "backbone.6" in summary and " 1 filter" in summary
    _, summary = client.predict(None, "predicted", "default", "steps=2; filters=0-2, 7", api_name="/explain_filters")
    assert "backbone.0" in summary and "4 filters" in summary


class BrightnessPlugin:
    """A third-party interpreter registered in-process: the demo must give it an endpoint of its own."""

    @staticmethod
    def brightness(**options):
        def interpret(model, image, *, target=None, layer=None):
            from tlkit.figures import new_figure
            from tlkit.interpret import Explanation

            values = image[0].mean(dim=0).numpy()
            figure = new_figure(3, 3)
            figure.add_subplot().imshow(values, cmap="gray")
            return Explanation(method="brightness", arrays={"brightness": values}, figure=figure,
                               info={"note": f"mean {values.mean():.2f}"})

        return interpret

    @staticmethod
    @hookimpl
    def register_interpreters(register):
        register("brightness-map", BrightnessPlugin.brightness, description="Mean over the colour channels")


def test_a_plugin_interpreter_gets_an_endpoint(fresh_host, colour_run, images, tmp_path):
    fresh_host.register(BrightnessPlugin(), name="brightness_plugin")
    served = serve(colour_run, tmp_path / "runs")
    try:
        client = Client(served.url, verbose=False)
        assert "/explain_brightness_map" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
        picture, summary = client.predict(handle_file(images["red"]), api_name="/explain_brightness_map")
        assert Path(picture).is_file() and summary.startswith("brightness-map: mean ")
    finally:
        served.demo.close()


# -- what is served ---------------------------------------------------------------------------------
def test_files_outside_gradio_cache_are_not_served(app, colour_run, colour_data):
    import httpx

    upload = httpx.post(f"{app.url}/gradio_api/upload", files={"files": ("x.png", b"\x89PNG fake", "image/png")})
    served_path = upload.json()[0]
    assert httpx.get(f"{app.url}/gradio_api/file={served_path}").status_code == 200  # the route itself works
    some_image = next((colour_data / "val" / "red").iterdir())
    for path in ["/etc/passwd", colour_run / "model.safetensors", colour_run / "config.json", some_image,
                 Path(demo_app.__file__)]:
        response = httpx.get(f"{app.url}/gradio_api/file={path}")
        assert response.status_code in (403, 404), path


# -- launching --------------------------------------------------------------------------------------
def test_share_failure_is_one_line_and_the_app_keeps_serving(colour_run, images, tmp_path, capfd):
    closed = free_port()  # nothing listens there: the share server cannot be reached
    started = time.time()
    served = serve(colour_run, tmp_path / "runs", share=True, share_server_address=f"127.0.0.1:{closed}")
    try:
        elapsed = time.time() - started
        lines = [line for line in capfd.readouterr().err.splitlines() if "share link" in line]
        assert len(lines) == 1, lines
        assert f"cannot reach the share server 127.0.0.1:{closed}" in lines[0]
        assert f"still served at {served.url}" in lines[0] and "--share-server-address" in lines[0]
        assert elapsed < 30
        client = Client(served.url, verbose=False)
        assert client.predict(handle_file(images["red"]), api_name="/predict")["label"] == "red"
    finally:
        served.demo.close()


def test_share_without_network_uses_gradios_server_check(monkeypatch, colour_run, tmp_path, capfd):
    from gradio import networking

    monkeypatch.setattr(networking, "GRADIO_API_SERVER", f"http://127.0.0.1:{free_port()}/v3/tunnel-request")
    monkeypatch.delenv("GRADIO_SHARE_SERVER_ADDRESS", raising=False)
    served = serve(colour_run, tmp_path / "runs", share=True)
    try:
        err = capfd.readouterr().err
        assert "could not create a share link (cannot reach the share service 127.0.0.1" in err
        assert served.demo.share_url is None
    finally:
        served.demo.close()


def test_share_check_gives_up_in_time(monkeypatch):
    monkeypatch.setattr(demo_app, "_share_checks", lambda address, timeout: time.sleep(5))
    started = time.time()
    assert demo_app.share_problem("example.org:7000", timeout=0.2) == "no answer from the share service within 1 s"
    assert time.time() - started < 2


def test_auth(colour_run, images, tmp_path):
    with pytest.raises(TlkitError, match="USER:PASS"):
        demo_app.launch(colour_run, auth="no-colon-here", prevent_thread_lock=True)
    with pytest.raises(TlkitError, match="HOST:PORT"):
        demo_app.launch(colour_run, share=True, share_server_address="nowhere", prevent_thread_lock=True)
    served = serve(colour_run, tmp_path / "runs", auth="ann:s3cret:with-colon")
    try:
        with pytest.raises(Exception):  # noqa: B017 - the client fails to read the config without login
            Client(served.url, verbose=False)
        client = Client(served.url, auth=("ann", "s3cret:with-colon"), verbose=False)
        assert client.predict(handle_file(images["red"]), api_name="/predict")["label"] == "red"
    finally:
        served.demo.close()


def test_cli_reports_a_missing_run_in_one_line(tmp_path, capsys):
    from tlkit.cli import main

    assert main(["demo", str(tmp_path / "nope"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_latest_run_or_train_tab(colour_run, tmp_path):
    demo = demo_app.build_app(None, runs_root=colour_run.parent)
    assert demo.tlkit_holder.current.run_dir == colour_run
    empty = demo_app.build_app(None, runs_root=tmp_path / "no_runs")
    assert empty.tlkit_holder.current is None
    tabs = [block for block in empty.blocks.values() if type(block).__name__ == "Tabs"]
    assert tabs and tabs[0].selected == "train"


def test_predict_without_a_model_says_what_to_do(images, tmp_path):
    served = serve(None, tmp_path / "no_runs")
    try:
        with pytest.raises(api_error(), match="no model is loaded yet"):
            Client(served.url, verbose=False).predict(handle_file(images["red"]), api_name="/predict")
    finally:
        served.demo.close()


# -- training in the demo ---------------------------------------------------------------------------
def make_zip(path, folder, prefix="mydata/"):
    """Zip ``folder`` under ``prefix``, plus the junk a zip from the wild holds."""
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*.png")):
            archive.write(file, prefix + file.relative_to(folder).as_posix())
        archive.writestr("../../escaped.png", b"zip slip")
        archive.writestr("/absolute.png", b"absolute")
        archive.writestr(prefix + "notes.txt", "not an image")
        archive.writestr(prefix + "warm/broken.png", b"\x89PNG\r\n\x1a\nbroken")
        archive.writestr("__MACOSX/" + prefix + "warm/._x.png", b"resource fork")
        link = zipfile.ZipInfo(prefix + "warm/link.png")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "/etc/passwd")
    return path


def test_train_from_a_zip_switches_the_model(colour_run, images, tmp_path, folder_factory):
    data = folder_factory(tmp_path / "two", classes=("warm", "fresh"), per_class=6, size=24, split=False)
    (tmp_path / "upload").mkdir()
    archive = make_zip(tmp_path / "upload" / "data.zip", data)
    runs_root = tmp_path / "demo_runs"
    served = serve(colour_run, runs_root)
    try:
        client = Client(served.url, verbose=False)
        assert client.predict(handle_file(images["red"]), api_name="/predict")["label"] == "red"

        job = client.submit("zip", handle_file(str(archive)), "seed_cnn", "gap", "none", "full", 2, 24, 0.01,
                            False, api_name="/train")
        statuses = list(job)
        final = job.result()
        assert isinstance(final, str)
        assert "epoch 0 (1/2)" in final and "epoch 1 (2/2)" in final  # one progress line per epoch
        assert "every tab now uses this model" in final
        assert "left out" in final and "skipped 1 file" in final  # junk entries, then the broken PNG
        # streamed as it goes; how many updates arrive depends on how fast the two epochs run
        assert statuses and all(isinstance(s, str) and s.startswith("training seed_cnn") for s in statuses)

        result = client.predict(handle_file(images["red"]), api_name="/predict")
        assert {c["label"] for c in result["confidences"]} == {"warm", "fresh"}
        assert result["label"] == "warm"  # the red-channel class
        new_runs = list(runs_root.glob("demo-*/model.safetensors"))
        assert len(new_runs) == 1
        assert served.demo.tlkit_holder.current.run_dir == new_runs[0].parent
        assert not (tmp_path / "escaped.png").exists() and not Path("/absolute.png").exists()
        _, summary = client.predict(handle_file(images["red"]), "fresh", "default", "", api_name="/explain_saliency")
        assert "'fresh'" in summary
    finally:
        served.demo.close()


def test_train_refuses_a_bad_zip(colour_run, images, tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    served = serve(colour_run, tmp_path / "runs")
    try:
        client = Client(served.url, verbose=False)
        with pytest.raises(api_error(), match="not a readable zip"):
            client.predict("zip", handle_file(str(fake)), "seed_cnn", "gap", "none", "full", 1, 24, 0.01, False,
                           api_name="/train")
        with pytest.raises(api_error(), match="choose a zip file"):
            client.predict("zip", None, "seed_cnn", "gap", "none", "full", 1, 24, 0.01, False, api_name="/train")
        assert client.predict(handle_file(images["red"]), api_name="/predict")["label"] == "red"
        assert served.demo.tlkit_holder.current.run_dir == colour_run
    finally:
        served.demo.close()


# -- the pieces -------------------------------------------------------------------------------------
def test_extract_zip_keeps_only_safe_image_entries(tmp_path, folder_factory):
    data = folder_factory(tmp_path / "d", classes=("warm", "fresh"), per_class=2, size=8, split=False)
    archive = make_zip(tmp_path / "a.zip", data)
    root, count, skipped = demo_app.extract_zip(archive, tmp_path / "out" / "x")
    assert root == (tmp_path / "out" / "x" / "mydata").resolve()
    assert sorted(p.name for p in root.iterdir()) == ["fresh", "warm"]
    assert count == 5  # 4 images + the broken PNG (the data scan skips that one)
    assert skipped == 5
    every = [p for p in (tmp_path / "out").rglob("*")]
    assert all(p.is_file() or p.is_dir() for p in every) and not any(p.is_symlink() for p in every)
    assert not (tmp_path / "escaped.png").exists()


def test_extract_zip_refuses_zips_without_images(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(TlkitError, match="no image files"):
        demo_app.extract_zip(archive, tmp_path / "out")


def test_parse_filters_and_options():
    assert demo_app.parse_filters("0-3, 7,9") == [0, 1, 2, 3, 7, 9]
    assert demo_app.parse_filters(" ") is None
    for bad in ("a-b", "5-2", "0-500"):
        with pytest.raises(TlkitError):
            demo_app.parse_filters(bad)
    assert demo_app.parse_options("steps=3; filters=[0, 1]\nalpha=0.5") == {"steps": 3, "filters": [0, 1], "alpha": 0.5}
    assert demo_app.parse_options("{n_steps: 8}") == {"n_steps": 8}
    with pytest.raises(TlkitError, match="key=value"):
        demo_app.parse_options("steps")
    assert demo_app.parse_auth("a:b:c") == ("a", "b:c")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
