"""``lmbench data fetch``: the paper's public datasets downloaded, checked and laid out as the
loaders read them.

Each release is a few files (``Remote``), each with its public URLs tried in order after the
mirrors the user names (``--mirror URL`` serves ``URL/<file name>``). A download resumes from
its ``.part`` file (an HTTP range request) when a transfer breaks. Every file is checked by
sha256: against the checksum its trusted source publishes where there is one, otherwise
against the one recorded in ``DIR/SHA256SUMS`` at its first download (said so when recorded),
on every later fetch. A file that fails its check is set aside and the next URL tried.
Archives (zip, tar, and RAR through bsdtar, 7z or unar, nested ones too) are unpacked and
their files moved into the loader's layout by the release's path patterns.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmbench.core.errors import LmbenchError

CHUNK = 1 << 20
ATTEMPTS = 3  # per URL: a broken transfer is resumed this many times before the next URL
SUMS = "SHA256SUMS"
GITHUB_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class Remote:
    name: str  # the file's name in DIR/downloads/ and on a mirror
    urls: tuple[str, ...]
    sha256: str | None = None  # published, or read from its trusted source; None: recorded at first download
    checksum_source: str = ""


@dataclass(frozen=True)
class Release:
    dataset: str  # the dataset plugin that reads the layout
    remotes: tuple[Remote, ...]
    layout: tuple[tuple[str, str], ...]  # (regex, any case, on an unpacked file's path; destination with \1 ...)
    by_hand: str = ""  # what a user must do for a file no URL serves (a licence form)


def _github(repo: str, commit: str, path: str) -> tuple[str, ...]:
    return (f"{GITHUB_RAW}/{repo}/{commit}/{path}", f"https://github.com/{repo}/raw/{commit}/{path}")


PAYER_COMMIT = "20560277bc4f2ed94f0fb49ad786e840bf0bf585"
GU2NET_COMMIT = "57a960cce4f9c8d42be5303d47ea9bd0f746718b"
RELEASES = {
    "isbi2015": Release("isbi2015", (
        Remote("isbi2015-figshare-3471833.zip",
               ("https://figshare.com/ndownloader/articles/3471833?private_link=37ec464af8e81ae6ebbf",)),
    ), layout=(
        (r"(?:^|/)(\d{3})\.bmp$", r"bmp/\1.bmp"),
        (r"(?:^|/)(400_senior|400_junior)/(\d{3})\.txt$", r"\1/\2.txt"),
    )),
    "hand": Release("hand", (
        Remote("all.csv", _github("christianpayer/MedicalDataAugmentationTool-HeatmapRegression", PAYER_COMMIT,
                                  "hand_xray/hand_xray_dataset/setup/all.csv"),
               "401b23872a6774266350515a4847f142c2a4cbb00bb4b3b64e8b6874d81d07fb",
               f"the file in Payer et al.'s repository at commit {PAYER_COMMIT[:12]}"),
        Remote("hand-atlas-jpg.zip", ()),
    ), layout=(
        (r"(?:^|/)all\.csv$", "labels/all.csv"),
        (r"(?:^|/)(\d+)\.jpe?g$", r"jpg/\1.jpg"),
    ), by_hand=("the Digital Hand Atlas images are given on request (https://ipilab.usc.edu/research/baaweb/); "
                "pass the archive you receive with --archive FILE, or a mirror serving hand-atlas-jpg.zip")),
    "chest": Release("chest", (
        Remote("ChinaSet_AllFiles.zip", ("https://openi.nlm.nih.gov/imgs/collections/ChinaSet_AllFiles.zip",)),
        Remote("chest_labels.zip", _github("MIRACLE-Center/YOLO_Universal_Anatomical_Landmark_Detection",
                                           GU2NET_COMMIT, "data/chest_labels.zip"),
               "4d140d5b8fb5ea162621f1af6c0d00ef060e5e73d1f5bfbd4c9bf8f595654fa2",
               f"the file in GU2Net's repository at commit {GU2NET_COMMIT[:12]}"),
    ), layout=(
        (r"(?:^|/)(CHNCXR_\d{4}_[01])\.png$", r"pngs/\1.png"),
        (r"(?:^|/)labels/(CHNCXR_\d{4}_[01])\.txt$", r"labels/\1.txt"),
    )),
}

Progress = Callable[[str, int, int | None], None]  # file name, bytes so far, total (None: unknown)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def read_sums(folder: Path) -> dict[str, str]:
    path = folder / SUMS
    if not path.exists():
        return {}
    return {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in path.read_text().splitlines()
                                                      if line.strip())}


def record_sum(folder: Path, name: str, digest: str) -> None:
    sums = read_sums(folder) | {name: digest}
    (folder / SUMS).write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))  # sha256sum -c reads it


def download(url: str, part: Path, name: str, progress: Progress) -> None:
    """``url`` into ``part``, continuing a partial file with a range request; raises OSError
    (urllib's errors included) when the transfer fails."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is whole
            return
        raise
    with response:
        resumed = have and response.status == 206
        total = response.length + (have if resumed else 0) if response.length is not None else None
        done = have if resumed else 0
        with open(part, "ab" if resumed else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                done += len(block)
                progress(name, done, total)
        if total is not None and done < total:
            raise ConnectionError(f"transfer ended at {done} of {total} bytes")


def transfer(url: str, part: Path, name: str, progress: Progress, say: Callable[[str], None]) -> str | None:
    """Download ``url`` into ``part``, resuming a broken transfer; None when whole, else why not."""
    reason = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            download(url, part, name, progress)
            return None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: a malformed URL
            reason = _reason(exc)
            if isinstance(exc, urllib.error.HTTPError) or not part.exists() or attempt == ATTEMPTS:
                break
            say(f"{url}: {reason}; resuming from byte {part.stat().st_size}")
    return reason


def obtain(remote: Remote, downloads: Path, mirrors: list[str], archive: Path | None, progress: Progress,
           say: Callable[[str], None]) -> Path | None:
    """``remote`` in ``downloads``, verified: a local ``archive``, the file already there, or a
    download from the mirrors then its URLs. None when none serves a file that has no public URL."""
    target = downloads / remote.name
    expected = remote.sha256 or read_sums(downloads).get(remote.name)
    if archive is not None:
        digest = sha256_of(archive)
        if expected is not None and digest != expected:
            raise LmbenchError(f"{archive}: sha256 {digest[:12]}... is not {remote.name}'s {expected[:12]}... "
                               f"({remote.checksum_source or SUMS}); a different or damaged file")
        return _accept(archive, target, remote, expected, say)
    if target.exists():
        digest = sha256_of(target)
        if expected is None or digest == expected:
            return _accept(target, target, remote, expected, say)
        say(f"{target}: sha256 {digest[:12]}... is not the expected {expected[:12]}...; set aside as "
            f"{target.name}.bad and downloaded again")
        target.replace(target.with_name(target.name + ".bad"))
    urls = [f"{mirror.rstrip('/')}/{remote.name}" for mirror in mirrors] + list(remote.urls)
    part = downloads / f"{remote.name}.part"
    failures = []
    for url in urls:
        reason = transfer(url, part, remote.name, progress, say)
        if reason is None:
            digest = sha256_of(part)
            mismatch = expected is not None and digest != expected
            reason = f"sha256 {digest[:12]}... is not the expected {expected[:12]}..." if mismatch else damage(part)
            if reason is None:
                return _accept(part, target, remote, expected, say)
            part.unlink()  # whole but wrong
        elif expected is None:
            part.unlink(missing_ok=True)  # unverifiable bytes do not carry over to the next URL
        failures.append(f"{url}: {reason}")
        say(f"{failures[-1]}; trying the next URL" if url != urls[-1] else failures[-1])
    if failures and remote.urls:  # a file only a mirror may hold is left to the user when none does
        raise LmbenchError(f"{remote.name}: no URL served it intact ({'; '.join(failures)}); files already "
                           f"downloaded are kept in {downloads}")
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _accept(path: Path, target: Path, remote: Remote, expected: str | None, say) -> Path:
    if path.parent != target.parent:  # a file given by hand stays where it is
        shutil.copyfile(path, target)
    elif path != target:
        path.replace(target)
    if remote.sha256:
        say(f"{remote.name}: sha256 verified against {remote.checksum_source}")
    elif expected:
        say(f"{remote.name}: sha256 verified against {SUMS} (recorded at its first download)")
    return target


#: what one archive may unpack to: more than any of the datasets needs (the hand atlas is a few
#: GB in a few thousand files), far less than an archive built to fill a disk
MAX_UNPACKED_BYTES = 64 * 2**30
MAX_MEMBERS = 200_000
MAX_RATIO = 100  # unpacked over packed size: images and text compress far less than that


def check_bounds(path: Path, sizes: list[int]) -> None:
    """Refuse, in one line, an archive whose members would unpack beyond the bounds."""
    total, packed = sum(sizes), max(path.stat().st_size, 1)
    if len(sizes) > MAX_MEMBERS or total > MAX_UNPACKED_BYTES or total > MAX_RATIO * packed:
        raise LmbenchError(f"{path}: refused, it would unpack {len(sizes)} files of {total / 2**20:.0f} MiB from "
                           f"{packed / 2**20:.1f} MiB (bounds: {MAX_MEMBERS} files, {MAX_UNPACKED_BYTES // 2**30} GiB, "
                           f"{MAX_RATIO}x its size)")


def unpack(path: Path, into: Path) -> None:
    """An archive's files under ``into``, archives inside it unpacked in turn; a plain file copied.
    Each archive is checked against the bounds before anything is written; a tar member that
    would leave ``into`` (an absolute path, ``..``, a link, a device) is refused in one line."""
    into.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            check_bounds(path, [info.file_size for info in archive.infolist()])
            archive.extractall(into)
    elif _is_rar(path):
        _unrar(path, into)
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            check_bounds(path, [member.size for member in archive.getmembers()])
            try:
                archive.extractall(into, filter="data")
            except tarfile.FilterError as exc:
                raise LmbenchError(f"{path}: refused, member {exc.tarinfo.name!r}: {exc}") from None
    else:
        shutil.copyfile(path, into / path.name)
        return
    for inner in [p for p in into.rglob("*") if p.is_file()]:
        if zipfile.is_zipfile(inner) or tarfile.is_tarfile(inner) or _is_rar(inner):
            unpack(inner, inner.with_name(inner.name + ".unpacked"))
            inner.unlink()


def damage(path: Path) -> str | None:
    """What is wrong with an archive's own checks (zip CRCs, tar headers), or None: the only
    check a file without a published checksum gets at its first download."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            return None if bad is None else f"damaged archive ({bad} fails its CRC)"
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as archive:
                for member in archive:
                    if member.isfile():
                        archive.extractfile(member).read()
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
        return f"damaged archive ({exc})"
    return None


def _is_rar(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"Rar!"


def _unrar(path: Path, into: Path) -> None:
    commands = {"bsdtar": ["bsdtar", "-xf", str(path), "-C", str(into)],
                "7z": ["7z", "x", "-y", f"-o{into}", str(path)],
                "unar": ["unar", "-q", "-f", "-o", str(into), str(path)]}
    for tool, command in commands.items():
        if shutil.which(tool):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise LmbenchError(f"{path}: {tool} could not unpack it ({done.stderr.strip()[-200:]})")
            return
    raise LmbenchError(f"{path}: a RAR archive, and no unpacker for it is installed; install one of bsdtar "
                       f"(Debian: libarchive-tools), 7z (7zip) or unar, then run lmbench data fetch again")


def arrange(unpacked: Path, root: Path, layout: tuple[tuple[str, str], ...]) -> int:
    """Move every unpacked file a layout pattern matches to its destination under ``root``."""
    moved = 0
    for path in sorted(p for p in unpacked.rglob("*") if p.is_file()):
        relative = path.relative_to(unpacked).as_posix()
        for pattern, destination in layout:
            if match := re.search(pattern, relative, re.IGNORECASE):
                target = root / match.expand(destination)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.replace(target)
                moved += 1
                break
    return moved


def fetch(release: Release, root: Path, mirrors: list[str] = (), archives: list[Path] = (),
          progress: Progress = lambda name, done, total: None, say: Callable[[str], None] = print) -> list[str]:
    """Every file of ``release`` into ``root`` in the loader's layout; returns what is still
    missing and must be done by hand (empty when complete)."""
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    names = {remote.name for remote in release.remotes}
    by_hand = [remote.name for remote in release.remotes if not remote.urls]
    given: dict[str, Path] = {}
    for path in map(Path, archives):
        if not path.is_file():
            raise LmbenchError(f"{path}: --archive names no file")
        name = path.name if path.name in names else (by_hand or [None])[0]
        if name is None or name in given:
            raise LmbenchError(f"{path}: --archive matches none of {release.dataset}'s files ({', '.join(sorted(names))})")
        given[name] = path
    missing = []
    for remote in release.remotes:
        got = obtain(remote, downloads, list(mirrors), given.get(remote.name), progress, say)
        if got is None:
            missing.append(f"{remote.name}: {release.by_hand}")
            continue
        unrecorded = remote.sha256 is None and remote.name not in read_sums(downloads)
        scratch = root / "unpacking"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            unpack(got, scratch)
            say(f"{remote.name}: {arrange(scratch, root, release.layout)} files laid out under {root}")
        except BaseException:
            if unrecorded and got != given.get(remote.name):  # refused, and nothing vouches for it: not kept
                got.unlink(missing_ok=True)
            raise
        finally:  # a refused archive leaves nothing half unpacked
            shutil.rmtree(scratch, ignore_errors=True)
        if unrecorded:  # trusted on later fetches only once it unpacked within bounds
            digest = sha256_of(got)
            record_sum(downloads, remote.name, digest)
            say(f"{remote.name}: no published checksum; sha256 {digest} recorded in {downloads / SUMS}, "
                f"checked on every later fetch")
    return missing
