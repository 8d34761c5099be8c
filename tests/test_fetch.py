"""``lmbench data fetch`` against a local HTTP server serving fixture releases: mirrors tried in
order, a corrupted file refused by its checksum, a broken download resumed, a file given by
hand, and the layout the loaders read."""

import dataclasses
import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from lmbench.core.errors import LmbenchError
from lmbench.data.fetch import RELEASES, SUMS, fetch, read_sums

from conftest import lmbench_cli


def png(seed: int, size=(40, 32)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=size, dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


CHEST_IDS = [f"{i:04d}" for i in range(1, 11)]
CHEST_IMAGES = zipped({f"ChinaSet_AllFiles/CXR_png/CHNCXR_{i}_0.png": png(int(i)) for i in CHEST_IDS}
                      | {"ChinaSet_AllFiles/ClinicalReadings/CHNCXR_0001_0.txt": b"male 45yrs\nnormal\n"})
CHEST_LABELS = zipped({f"chest/labels/CHNCXR_{i}_0.txt": b"6\n0.2 0.3\n0.3 0.6\n0.35 0.8\n0.7 0.3\n0.65 0.6\n0.6 0.8\n"
                       for i in CHEST_IDS})
FILES = {"ChinaSet_AllFiles.zip": CHEST_IMAGES, "chest_labels.zip": CHEST_LABELS}
# the chest release with the fixtures' checksum where the real one publishes one, and a public
# URL refusing connections (nothing here reaches the real hosts)
CHEST = dataclasses.replace(RELEASES["chest"], remotes=tuple(
    dataclasses.replace(r, sha256=hashlib.sha256(FILES[r.name]).hexdigest() if r.sha256 else None,
                        urls=(f"http://127.0.0.1:9/{r.name}",))
    for r in RELEASES["chest"].remotes))


class Server:
    """Mirrors under one port: /good/ serves the files (honouring ranges), /dead/ answers 404,
    /corrupt/ flips a byte, /flaky/ breaks each file's first transfer halfway."""

    def __init__(self, files):
        self.files, self.requests, self.broken = files, [], set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror, _, name = self.path.strip("/").partition("/")
                server.requests.append((mirror, name, self.headers.get("Range")))
                data = server.files.get(name)
                if mirror == "dead" or data is None:
                    self.send_error(404)
                    return
                if mirror == "corrupt":
                    data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                if mirror == "flaky" and name not in server.broken:
                    server.broken.add(name)
                    self.wfile.write(data[start:len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the transfer breaks
                    return
                self.wfile.write(data[start:])

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    serving = Server(FILES)
    yield serving
    serving.http.shutdown()


def test_mirrors_in_order_then_the_layout_the_loader_reads(server, tmp_path):
    said = []
    missing = fetch(CHEST, tmp_path / "chest", [f"{server.url}/dead", f"{server.url}/good"], say=said.append)
    assert missing == []
    assert [(m, n) for m, n, _ in server.requests] == [("dead", "ChinaSet_AllFiles.zip"), ("good", "ChinaSet_AllFiles.zip"),
                                                       ("dead", "chest_labels.zip"), ("good", "chest_labels.zip")]
    assert any("dead/ChinaSet_AllFiles.zip: HTTP 404" in line and "trying the next URL" in line for line in said)
    root = tmp_path / "chest"
    assert sorted(p.name for p in (root / "pngs").iterdir()) == [f"CHNCXR_{i}_0.png" for i in CHEST_IDS]
    assert len(list((root / "labels").iterdir())) == 10 and not (root / "unpacking").exists()
    # the images' release publishes no checksum: recorded, and said so; the labels' is verified
    assert read_sums(root / "downloads") == {"ChinaSet_AllFiles.zip": hashlib.sha256(CHEST_IMAGES).hexdigest()}
    assert any("no published checksum" in line and SUMS in line for line in said)
    assert any("chest_labels.zip: sha256 verified against" in line for line in said)


def test_a_corrupted_file_is_refused_by_its_checksum(server, tmp_path):
    said = []
    fetch(CHEST, tmp_path / "chest", [f"{server.url}/corrupt", f"{server.url}/good"], say=said.append)
    assert any("corrupt/chest_labels.zip: sha256" in line and "is not the expected" in line for line in said)
    # no checksum published: the archive's own CRCs refuse the damaged copy
    assert any("corrupt/ChinaSet_AllFiles.zip: damaged archive" in line for line in said)
    downloads = tmp_path / "chest" / "downloads"
    assert (downloads / "chest_labels.zip").read_bytes() == CHEST_LABELS
    # recorded at the first download, the images' checksum catches a file damaged since
    (downloads / "ChinaSet_AllFiles.zip").write_bytes(CHEST_IMAGES[:200] + b"?" + CHEST_IMAGES[201:])
    said.clear()
    server.requests.clear()
    fetch(CHEST, tmp_path / "chest", [f"{server.url}/good"], say=said.append)
    assert any("set aside as ChinaSet_AllFiles.zip.bad and downloaded again" in line for line in said)
    assert (downloads / "ChinaSet_AllFiles.zip").read_bytes() == CHEST_IMAGES
    assert [n for _, n, _ in server.requests] == ["ChinaSet_AllFiles.zip"]  # the intact labels are not downloaded again
    with pytest.raises(LmbenchError, match=r"^chest_labels.zip: no URL served it intact \(.*corrupt/chest_labels.zip: sha256"):
        (downloads / "chest_labels.zip").unlink()
        fetch(CHEST, tmp_path / "chest", [f"{server.url}/corrupt", f"{server.url}/dead"], say=said.append)
    assert (downloads / "ChinaSet_AllFiles.zip").exists()  # nothing already downloaded is lost


def test_a_broken_download_resumes_where_it_stopped(server, tmp_path):
    said = []
    fetch(CHEST, tmp_path / "chest", [f"{server.url}/flaky"], say=said.append)
    first, second = [r for r in server.requests if r[1] == "chest_labels.zip"]
    assert first[2] is None and second[2] == f"bytes={len(CHEST_LABELS) // 2}-"
    assert any(f"resuming from byte {len(CHEST_LABELS) // 2}" in line for line in said)
    assert (tmp_path / "chest" / "downloads" / "chest_labels.zip").read_bytes() == CHEST_LABELS


def test_a_file_given_by_hand_and_what_is_still_missing(server, tmp_path):
    server.files = {"all.csv": b"1,10.0,20.0\n"}
    annotations, atlas_images = RELEASES["hand"].remotes  # the atlas has no public URL
    hand = dataclasses.replace(RELEASES["hand"], remotes=(
        dataclasses.replace(annotations, urls=("http://127.0.0.1:9/all.csv",), sha256=None), atlas_images))
    missing = fetch(hand, tmp_path / "hand", [f"{server.url}/good"], say=lambda line: None)
    assert (tmp_path / "hand" / "labels" / "all.csv").exists()
    assert len(missing) == 1 and "given on request" in missing[0] and "--archive" in missing[0]
    atlas = tmp_path / "atlas-from-the-form.zip"
    atlas.write_bytes(zipped({"JPEGimages/Asian/3128.jpg": b"jpeg", "JPEGimages/Asian/3129.JPG": b"jpeg"}))
    assert fetch(hand, tmp_path / "hand", [f"{server.url}/good"], [atlas], say=lambda line: None) == []
    assert sorted(p.name for p in (tmp_path / "hand" / "jpg").iterdir()) == ["3128.jpg", "3129.jpg"]
    assert atlas.exists()  # the user's file stays where it is


def test_the_command_fetches_isbi_unpacks_nested_archives_and_checks(server, tmp_path):
    senior = "\n".join(f"{100 + 5 * k},{200 + 3 * k}" for k in range(19)) + "\n"
    annotations = zipped({f"{who}/{i:03d}.txt": senior.encode() for who in ("400_senior", "400_junior")
                          for i in (1, 131, 151)})
    images = zipped({f"RawImage/{folder}/{i:03d}.bmp": _bmp(i)
                     for folder, i in (("TrainingData", 1), ("TrainingData", 131), ("Test1Data", 151))})
    name = RELEASES["isbi2015"].remotes[0].name  # the figshare article: a zip holding the two archives
    server.files = {name: zipped({"AnnotationsByMD.rar": annotations, "RawImage.rar": images})}
    shown = lmbench_cli("data", "fetch", "isbi2015", "--to", str(tmp_path / "isbi"), "--mirror", f"{server.url}/good")
    root = tmp_path / "isbi"
    assert sorted(p.name for p in (root / "bmp").iterdir()) == ["001.bmp", "131.bmp", "151.bmp"]
    assert len(list((root / "400_junior").iterdir())) == 3
    # three of the release's 400 images: laid out and checked, and a run on it would stop at the 397 missing
    out = " ".join(shown.stdout.split())
    assert "isbi2015: 1 train, 1 val, 1 test" in out and "not usable: 397 images of the splits fail to load" in out
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "no published checksum" in shown.stdout
    unknown = lmbench_cli("data", "fetch", "nope", "--to", str(tmp_path / "x"))
    assert unknown.returncode == 2 and unknown.stdout.startswith("error: no public release named 'nope'")


def _bmp(seed: int) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png(seed, (300, 240)))).save(out, format="BMP")
    return out.getvalue()


def test_archives_beyond_the_bounds_or_leaving_their_folder_are_refused_in_one_line(tmp_path):
    import tarfile

    from lmbench.data.fetch import unpack

    bomb = tmp_path / "bomb.zip"  # 64 MiB of zeros in a few hundred kB
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * 64 * 2**20)
    with pytest.raises(LmbenchError, match=r"bomb.zip: refused, it would unpack 1 files of 64 MiB from 0.1 MiB"):
        unpack(bomb, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())  # nothing written before the refusal
    hostile = tmp_path / "hostile.tar"
    with tarfile.open(hostile, "w") as archive:
        data = b"x" * 10
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    with pytest.raises(LmbenchError, match=r"hostile.tar: refused, member '../escaped.txt'"):
        unpack(hostile, tmp_path / "tar-out")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_refused_archive_is_neither_recorded_as_trusted_nor_kept(tmp_path):
    bomb = tmp_path / "ChinaSet_AllFiles.zip"  # the images' release publishes no checksum
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * 64 * 2**20)
    root = tmp_path / "chest"
    with pytest.raises(LmbenchError, match="refused, it would unpack"):
        fetch(CHEST, root, archives=[bomb], say=lambda line: None)
    assert read_sums(root / "downloads") == {}
    assert sorted(p.name for p in root.iterdir()) == ["downloads"] and not any((root / "downloads").iterdir())
