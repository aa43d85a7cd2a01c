"""Downloads against a loopback HTTP server, safe archive extraction, and where datasets are looked for."""

from __future__ import annotations

import dataclasses
import http.server
import io
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datafiles import write_cifar10, write_idx_dataset

from sparsecl.data.checks import md5_hex
from sparsecl.data.dataset import DataError
from sparsecl.data.download import Download, download_file, extract_archive, fetch
from sparsecl.data.registry import DATASETS, cache_dir, find_dataset


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the name http.server calls
        body, length = self.server.routes.get(self.path, (None, None))  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)  # HTTP/1.0: the connection closes after, so a short body is cut off

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """A loopback server; add routes with ``server.routes[path] = (body, content_length_or_None)``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty HOME (so an empty user cache) and no $SPARSECL_DATA / $XDG_CACHE_HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("SPARSECL_DATA", raising=False)
    return tmp_path / "home"


BODY = bytes(range(256)) * 40


def error_text(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# --- download_file --------------------------------------------------------------------------------------
def test_good_checksum_writes_the_file_and_nothing_else(server, tmp_path):
    server.routes["/f.bin"] = (BODY, None)
    seen = []
    path = download_file(f"{server.url}/f.bin", tmp_path / "d" / "f.bin", md5_hex(BODY),
                         progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == BODY
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.bin"]
    assert seen[-1] == (len(BODY), len(BODY))


def test_bad_checksum_leaves_nothing(server, tmp_path):
    server.routes["/f.bin"] = (BODY, None)
    url = f"{server.url}/f.bin"
    with pytest.raises(DataError) as excinfo:
        download_file(url, tmp_path / "f.bin", "0" * 32)
    assert error_text(excinfo) == f"{url}: checksum mismatch: expected md5 {'0' * 32}, got {md5_hex(BODY)}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("route, fragment", [
    (None, "HTTP error 404 Not Found"),
    ((BODY[:10], 1000), "truncated download: expected 1000 bytes, got 10"),
])
def test_http_errors_and_short_bodies_leave_nothing(server, tmp_path, route, fragment):
    if route is not None:
        server.routes["/f.bin"] = route
    with pytest.raises(DataError) as excinfo:
        download_file(f"{server.url}/f.bin", tmp_path / "f.bin", None)
    assert error_text(excinfo) == f"{server.url}/f.bin: {fragment}"
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_network_error(tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError) as excinfo:
        download_file(f"http://127.0.0.1:{port}/f.bin", tmp_path / "f.bin", None, timeout=5)
    assert f"http://127.0.0.1:{port}/f.bin: network error:" in error_text(excinfo)
    assert list(tmp_path.iterdir()) == []


def test_fetch_tries_mirrors_in_order_and_reports_all_failures(server, tmp_path):
    server.routes["/b/f.bin"] = (BODY, None)
    urls = (f"{server.url}/a/f.bin", f"{server.url}/b/f.bin")
    fetch([Download("f.bin", urls, md5_hex(BODY))], tmp_path)
    assert (tmp_path / "f.bin").read_bytes() == BODY
    with pytest.raises(DataError) as excinfo:
        fetch([Download("g.bin", (urls[0], f"{server.url}/c/g.bin"), md5_hex(BODY))], tmp_path)
    msg = error_text(excinfo)
    assert msg.startswith("could not download g.bin: ")
    assert f"{urls[0]}: HTTP error 404" in msg and f"{server.url}/c/g.bin: HTTP error 404" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


# --- extract_archive ------------------------------------------------------------------------------------
def _tar(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return path


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_places_top_level_entries_and_replaces_stale_ones(tmp_path):
    target = tmp_path / "t"
    (target / "pkg").mkdir(parents=True)
    (target / "pkg" / "stale.txt").write_text("old partial extraction")
    archive = _tar(tmp_path / "a.tar.gz", {"pkg/x.bin": b"x", "pkg/sub/y.bin": b"y", "top.txt": b"t"})
    assert extract_archive(archive, target) == [target / "pkg", target / "top.txt"]
    assert (target / "pkg" / "sub" / "y.bin").read_bytes() == b"y"
    assert sorted(p.name for p in target.iterdir()) == ["pkg", "top.txt"]  # no staging dir left
    assert sorted(p.name for p in (target / "pkg").iterdir()) == ["sub", "x.bin"]
    zipped = _zip(tmp_path / "a.zip", {"z/inner.txt": b"z"})
    assert extract_archive(zipped, target) == [target / "z"]
    assert (target / "z" / "inner.txt").read_bytes() == b"z"


@pytest.mark.parametrize("make, fragment", [
    (lambda p: _tar(p / "a.tar.gz", {"ok.txt": b"1", "../evil.txt": b"2"}), "unsafe member '../evil.txt'"),
    (lambda p: _tar(p / "a.tar.gz", {"/abs/evil.txt": b"2"}), "unsafe member '/abs/evil.txt'"),
    (lambda p: _tar(p / "a.tar.gz", {"ok.txt": b"1"}, link="passwd"), "unsafe member 'passwd' (links"),
    (lambda p: _zip(p / "a.zip", {"d/../../evil.txt": b"2"}), "unsafe member 'd/../../evil.txt'"),
    (lambda p: (p / "a.tar.gz").write_bytes(b"not an archive") and p / "a.tar.gz", "not a tar or zip archive"),
])
def test_unsafe_or_bad_archives_are_refused_before_writing(tmp_path, make, fragment):
    archive = make(tmp_path)
    target = tmp_path / "deep" / "t"
    with pytest.raises(DataError) as excinfo:
        extract_archive(archive, target)
    assert error_text(excinfo).startswith(f"{archive}: ") and fragment in str(excinfo.value)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


# --- lookup order ---------------------------------------------------------------------------------------
def test_lookup_order_root_env_cache_system(tmp_path, home, monkeypatch):
    root, env, system = tmp_path / "root", tmp_path / "env", tmp_path / "sys"
    copies = {
        "root": write_idx_dataset(root, seed=1),
        "env": write_idx_dataset(env / "fashion-mnist", seed=2),
        "cache": write_idx_dataset(home / ".cache" / "sparsecl" / "fashion-mnist", seed=3),
        "system": write_idx_dataset(system, seed=4),
    }
    monkeypatch.setenv("SPARSECL_DATA", str(env))
    spec = dataclasses.replace(DATASETS.get("fashion-mnist"), system_dirs=lambda: (system,))
    expected = [("root", root), ("env", env / "fashion-mnist"),
                ("cache", home / ".cache" / "sparsecl" / "fashion-mnist"), ("system", system)]
    for which, directory in expected:
        assert spec.find(root) == directory
        ds = spec.load(root, download=False, verify=False)
        np.testing.assert_array_equal(ds.y_train.numpy(), copies[which].y_train)
        for f in directory.iterdir():  # remove this copy: the next place in line is used
            f.unlink()
    assert spec.find(root) is None


def test_root_may_name_the_parent_and_xdg_cache_wins_over_home(tmp_path, home, monkeypatch):
    write_idx_dataset(tmp_path / "parent" / "mnist")
    assert find_dataset("mnist", tmp_path / "parent") == tmp_path / "parent" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "sparsecl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    assert cache_dir() == home / ".cache" / "sparsecl"


# --- load_dataset's download path -----------------------------------------------------------------------
def _served_fashion(server, tmp_path) -> tuple:
    written = write_idx_dataset(tmp_path / "served", n_train=5, n_test=3, seed=7)
    downloads = []
    for f in DATASETS.get("fashion-mnist").files:
        body = (tmp_path / "served" / f.path).read_bytes()
        server.routes[f"/fm/{f.path}"] = (body, None)
        downloads.append(Download(f.path, (f"{server.url}/gone/{f.path}", f"{server.url}/fm/{f.path}"), md5_hex(body)))
    spec = dataclasses.replace(DATASETS.get("fashion-mnist"), downloads=tuple(downloads), system_dirs=lambda: ())
    return spec, written


def test_load_downloads_missing_files_into_the_user_cache(server, tmp_path, home):
    spec, written = _served_fashion(server, tmp_path)
    ds = spec.load(verify=False)
    np.testing.assert_array_equal(ds.x_train.numpy(), written.x_train)
    cached = home / ".cache" / "sparsecl" / "fashion-mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(f.path for f in spec.files)
    server.routes.clear()  # now served from the cache, with downloads disabled
    assert spec.find() == cached
    np.testing.assert_array_equal(spec.load(download=False, verify=False).y_test.numpy(), written.y_test)


def test_load_downloads_and_unpacks_an_archive(server, tmp_path, home):
    written = write_cifar10(tmp_path / "src", n_per_batch=2, n_test=3, seed=8)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    server.routes["/cifar-10-python.tar.gz"] = (archive.read_bytes(), None)
    download = Download(archive.name, (f"{server.url}/{archive.name}",), md5_hex(archive.read_bytes()), extract=True)
    spec = dataclasses.replace(DATASETS.get("cifar10"), downloads=(download,))
    ds = spec.load(download=True, verify=False)
    np.testing.assert_array_equal(ds.x_train.numpy(), written.x_train)
    np.testing.assert_array_equal(ds.y_test.numpy(), written.y_test)
    assert [p.name for p in (home / ".cache" / "sparsecl" / "cifar10").iterdir()] == ["cifar-10-batches-py"]


def test_not_found_lists_every_place_and_the_fix(server, tmp_path, home):
    spec, _ = _served_fashion(server, tmp_path)
    spec = dataclasses.replace(spec, system_dirs=lambda: (tmp_path / "sys",))
    with pytest.raises(DataError) as excinfo:
        spec.load(tmp_path / "r", download=False)
    msg = error_text(excinfo)
    cache = home / ".cache" / "sparsecl" / "fashion-mnist"
    assert msg.startswith(f"dataset 'fashion-mnist' not found in: {tmp_path / 'r'} (root), "
                          f"{tmp_path / 'r' / 'fashion-mnist'} (root), {cache} (user cache), "
                          f"{tmp_path / 'sys'} (system); "
                          "download disabled (download=False); to fix: apt-get install dataset-fashion-mnist, or put ")
    assert msg.endswith("or set SPARSECL_DATA to a directory holding fashion-mnist/")
    server.routes.clear()
    with pytest.raises(DataError) as excinfo:
        spec.load(download=None)
    assert "download failed: could not download train-images-idx3-ubyte.gz: " in error_text(excinfo)
    assert "/fm/train-images-idx3-ubyte.gz: HTTP error 404" in str(excinfo.value)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_a_download_without_the_needed_files_is_an_error(server, tmp_path, home):
    archive = tmp_path / "c.tar.gz"
    _tar(archive, {"cifar-10-batches-py/data_batch_1": b"x"})
    server.routes["/c.tar.gz"] = (archive.read_bytes(), None)
    download = Download(archive.name, (f"{server.url}/c.tar.gz",), md5_hex(archive.read_bytes()), extract=True)
    spec = dataclasses.replace(DATASETS.get("cifar10"), downloads=(download,))
    with pytest.raises(DataError) as excinfo:
        spec.load()
    assert error_text(excinfo) == (f"{home / '.cache' / 'sparsecl' / 'cifar10'}: the download did not provide "
                                   + ", ".join(f"cifar-10-batches-py/{n}" for n in
                                               ["data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                                                "test_batch"]))
