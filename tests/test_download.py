"""The dataset download tool: extraction, layout normalisation, fallback, verification, the CLI (network mocked)."""

import io
import json
import zipfile
from pathlib import Path

import gdown
import huggingface_hub
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image

import datasets.download as dl
from datasets.biomed import read_split_file
from datasets.catalogue import get_info
from datasets.download import (
    DOWNLOADS_DIR,
    ArchiveError,
    extract_archive,
    locate_layout,
    short_reason,
    verify_dataset,
)
from scripts.download_data import main

BTMRI = get_info("btmri")  # a real catalogue row: its sizes / class names differ from the tiny archive (warn only)
CLASSES = ("glioma tumor", "meningioma tumor", "pituitary tumor")
FILES = ("image (3).jpg", "Tr-gl_0010 copy.png", "img(12) b.jpeg", "scan 7.jpg")  # spaces and parentheses


def _image_bytes(fmt: str, value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (value, 10, 200)).save(buf, format=fmt)
    return buf.getvalue()


def _split(name: str = "BTMRI") -> dict[str, list]:
    """Entries ``[relpath, label, classname]``: per class, 2 train, 1 val, 1 test."""
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, cname in enumerate(CLASSES):
        folder = cname.replace(" ", "_")
        for i, fname in enumerate(FILES):
            which = ("train", "train", "val", "test")[i]
            split[which].append([f"{folder}/{fname}", label, cname])
    return split


def _members(layout: str, name: str = "BTMRI") -> dict[str, bytes]:
    """Archive members for one nesting: ``{path in zip: bytes}``."""
    split = _split(name)
    images = {}
    for entries in split.values():
        for rel, label, _ in entries:
            fmt = "PNG" if rel.endswith(".png") else "JPEG"
            images[rel] = _image_bytes(fmt, 40 * label + len(rel))
    split_bytes = json.dumps(split).encode()
    split_name = f"split_{name}.json"
    if layout == "released":  # NAME/split_NAME.json + NAME/NAME/class/…
        split_at, image_prefix = f"{name}/{split_name}", f"{name}/{name}/"
    elif layout == "top":  # split_NAME.json + NAME/class/… at the top
        split_at, image_prefix = split_name, f"{name}/"
    elif layout == "wrapper":  # an extra wrapper folder around the released layout
        split_at, image_prefix = f"{name}_v2/{name}/{split_name}", f"{name}_v2/{name}/{name}/"
    elif layout == "flat":  # split file inside the image folder: class folders beside it
        split_at, image_prefix = f"data/{split_name}", "data/"
    elif layout == "other_name":  # a single, differently named image folder beside the split file
        split_at, image_prefix = f"{name}/{split_name}", f"{name}/images/"
    else:
        raise ValueError(layout)
    members = {split_at: split_bytes}
    members.update({image_prefix + rel: data for rel, data in images.items()})
    members["__MACOSX/._junk"] = b"resource fork"
    return members


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, data in members.items():
            zf.writestr(arcname, data)
    return path


class FakeNet:
    """Mocks of ``hf_hub_download`` and ``gdown.download``: serve a built zip or raise; count the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hub_cache: Path) -> None:
        self.hub_cache = hub_cache
        self.archives: dict[str, Path] = {}  # hf_file → a zip standing in for the remote file
        self.hub_error: Exception | None = None
        self.drive_error: Exception | None = None
        self.hub_calls: list[dict] = []
        self.drive_calls: list[dict] = []
        monkeypatch.setattr(dl, "_UNREACHABLE", {})  # each test starts with every source reachable
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the mocks stand in for the network
        self.probes: list[str] = []
        monkeypatch.setattr(dl, "_probe_host", self.probe_host)
        self.unreachable: set[str] = set()
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)
        monkeypatch.setattr(gdown, "download", self.gdown_download)

    def probe_host(self, host: str, port: int = 443) -> str | None:
        self.probes.append(host)
        return f"{host} unreachable (OSError: [Errno 101] Network is unreachable)" if host in self.unreachable \
            else None

    def hf_hub_download(self, **kwargs: object) -> str:
        self.hub_calls.append(kwargs)
        if self.hub_error is not None:
            raise self.hub_error
        assert kwargs["repo_type"] == "dataset" and kwargs["repo_id"] == "TahaKoleilat/BiomedCoOp"
        return str(self.archives[str(kwargs["filename"])])  # the hub returns its cache path

    def gdown_download(self, **kwargs: object) -> str:
        self.drive_calls.append(kwargs)
        if self.drive_error is not None:
            raise self.drive_error
        assert kwargs["resume"] is True and kwargs["id"] == get_info(Path(str(kwargs["output"])).stem).gdrive_id
        out = Path(str(kwargs["output"]))
        out.write_bytes(self.archives[out.name].read_bytes())
        return str(out)


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeNet:
    return FakeNet(monkeypatch, tmp_path / "hub-cache")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


def _serve(net: FakeNet, layout: str = "released", name: str = "BTMRI") -> Path:
    path = _zip(net.hub_cache / f"{name}.zip", _members(layout, name))
    net.archives[f"{name}.zip"] = path
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_clean(root: Path) -> None:
    """Nothing half-done: no staging folders, no empty download folder."""
    assert not (root / DOWNLOADS_DIR).exists() or not any(
        p.name.endswith((".extract", ".staged", ".replaced")) for p in (root / DOWNLOADS_DIR).iterdir())


@pytest.mark.parametrize("layout", ["released", "top", "wrapper", "flat", "other_name"])
def test_every_nesting_is_normalised_to_the_released_layout(
        layout: str, net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hub_zip = _serve(net, layout)
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri")
    assert rc == 0, err
    assert "BTMRI: downloaded, verified (train 6 / val 3 / test 3, 3 classes)" in out
    assert "warning: split sizes 6 / 3 / 3 differ from the catalogue's 2854 / 1141 / 1717" in out
    assert "1 ready, 0 failed" in out
    assert sorted(p.name for p in (root / "BTMRI").iterdir()) == ["BTMRI", "split_BTMRI.json"]
    assert sorted(p.name for p in (root / "BTMRI" / "BTMRI").iterdir()) == [c.replace(" ", "_") for c in CLASSES]
    splits = read_split_file(root / "BTMRI" / "split_BTMRI.json", root / "BTMRI" / "BTMRI")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert splits["train"][0].classname == "glioma tumor" and Path(splits["train"][0].impath).is_file()
    assert not (root / DOWNLOADS_DIR).exists()  # staging removed, nothing of ours left
    assert hub_zip.is_file()  # the hub's own cache file is never deleted
    assert len(net.hub_calls) == 1 and not net.drive_calls


def test_released_layout_builds_through_the_registry(net: FakeNet, root: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from engine.config import get_cfg_default
    from engine.data import build_dataset

    _serve(net)
    assert _run(capsys, "--root", str(root), "--datasets", "BTMRI")[0] == 0
    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT = "BTMRI", str(root)
    ds = build_dataset(cfg)
    assert ds.classnames == list(CLASSES) and len(ds.train_x) == 6 and len(ds.test) == 3


def test_second_run_is_idempotent_and_offline(net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _serve(net)
    assert _run(capsys, "--root", str(root), "--datasets", "btmri")[0] == 0
    net.hub_error = net.drive_error = OSError("network must not be touched")
    rc, out, _ = _run(capsys, "--root", str(root), "--datasets", "btmri")
    assert rc == 0 and "BTMRI: verified, skipping (train 6 / val 3 / test 3, 3 classes)" in out
    assert len(net.hub_calls) == 1 and not net.drive_calls


def test_hub_failure_falls_back_to_drive_and_deletes_the_archive(
        net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    _serve(net)
    net.hub_error = LocalEntryNotFoundError("offline mode is enabled")
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "--source", "hf")
    assert rc == 0, err
    assert len(net.hub_calls) == 1 and len(net.drive_calls) == 1
    assert net.drive_calls[0]["output"] == str(root / DOWNLOADS_DIR / "BTMRI.zip")
    assert "falling back to Google Drive" in caplog.text
    assert verify_dataset(root, BTMRI)["ok"]
    assert not (root / DOWNLOADS_DIR).exists()  # our archive removed (no --keep-archives)


def test_keep_archives_and_source_gdrive(net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _serve(net, "top")
    rc, _, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "--source", "gdrive", "--keep-archives")
    assert rc == 0, err
    assert not net.hub_calls and len(net.drive_calls) == 1  # straight to Drive
    assert (root / DOWNLOADS_DIR / "BTMRI.zip").is_file()
    _assert_clean(root)


def test_both_sources_failing_give_one_line_per_dataset(
        net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net.hub_error = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.\nmore")
    net.drive_error = OSError("[Errno -2] Name or service not known")
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "busi")
    assert rc == 1
    lines = [ln for ln in err.splitlines() if "failed" in ln]  # the fallback log line says "unavailable"
    assert len(lines) == 2 and lines[0].startswith("BTMRI: download failed (hub: LocalEntryNotFoundError")
    assert "drive: OSError: [Errno -2] Name or service not known" in lines[0]
    assert lines[0].endswith("on a machine with network run: python scripts/download_data.py --root data "
                             f"--datasets btmri, then copy its folder data/BTMRI/ to {root.resolve()}/BTMRI/; or "
                             "fetch https://huggingface.co/datasets/TahaKoleilat/BiomedCoOp/resolve/main/BTMRI.zip "
                             f"and run: python scripts/download_data.py --root {root} --archive BTMRI.zip "
                             "--datasets btmri")
    assert lines[1].startswith("BUSI: download failed") and lines[1].endswith("--datasets busi")
    assert "Traceback" not in out + err
    assert out.strip().splitlines()[-1] == "0 ready, 2 failed: BTMRI BUSI"
    assert not (root / "BTMRI").exists() and not (root / "BUSI").exists()
    assert not (root / DOWNLOADS_DIR).exists()
    assert len(net.hub_calls) == 2 and len(net.drive_calls) == 2  # one attempt per source, no retry loop


def test_check_on_a_good_and_a_broken_tree(net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _serve(net)
    assert _run(capsys, "--root", str(root), "--datasets", "btmri")[0] == 0
    rc, out, _ = _run(capsys, "--root", str(root), "--datasets", "btmri", "--check")
    assert rc == 0 and "BTMRI: ok (train 6 / val 3 / test 3, 3 classes)" in out and "1 verified, 0 failed" in out
    (root / "BTMRI" / "BTMRI" / "meningioma_tumor" / "image (3).jpg").unlink()
    net.hub_error = OSError("network must not be touched")
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "covid", "--check")
    assert rc == 1 and "0 verified, 2 failed: BTMRI COVID_19" in out
    assert "BTMRI: FAILED: 1 image(s) listed" in err and "meningioma_tumor/image (3).jpg" in err
    assert "train[2]" in err  # the split entry is named
    assert "COVID_19: FAILED: folder not found" in err and "--datasets covid" in err
    assert len(net.hub_calls) == 1  # --check never touches the network


def test_verify_shows_a_bar_on_large_datasets_and_warns_on_classes(
        net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:

    _serve(net)
    assert _run(capsys, "--root", str(root), "--datasets", "btmri")[0] == 0
    monkeypatch.setattr(dl, "PROGRESS_MIN_FILES", 1)
    report = verify_dataset(root, BTMRI)
    assert "checking files" in capsys.readouterr().err
    assert report["ok"] and report["counts"] == {"train": 6, "val": 3, "test": 3}
    assert report["classnames"] == list(CLASSES) and report["num_classes"] == 3
    assert any("differ from the catalogue's" in w and "normal brain" in w for w in report["warnings"])


def test_an_incomplete_folder_is_replaced(net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _serve(net, "wrapper")
    (root / "BTMRI").mkdir(parents=True)
    (root / "BTMRI" / "split_BTMRI.json").write_text(json.dumps(_split()))  # images missing
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri")
    assert rc == 0, err
    assert verify_dataset(root, BTMRI)["ok"] and len(net.hub_calls) == 1
    _assert_clean(root)


def test_zip_slip_archive_is_refused(net: FakeNet, root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    members = _members("released")
    members["../escaped.txt"] = b"owned"
    net.archives["BTMRI.zip"] = _zip(net.hub_cache / "BTMRI.zip", members)
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri")
    assert rc == 1 and "BTMRI: install failed:" in err and "zip-slip" in err and "'../escaped.txt'" in err
    assert sum("failed" in ln for ln in err.splitlines()) == 1 and "Traceback" not in err
    assert not (root / "BTMRI").exists() and not list(tmp_path.rglob("escaped.txt"))
    _assert_clean(root)


@pytest.mark.parametrize("member", ["/etc/evil", "a/../../evil", "C:/evil", "..\\evil"])
def test_extract_refuses_unsafe_members_before_writing(member: str, tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"ok.txt": b"x"})
    with zipfile.ZipFile(archive, "a") as zf:
        info = zipfile.ZipInfo("placeholder")
        info.filename = member  # bypass zipfile's own normalisation, as a hostile archive would
        zf.writestr(info, b"evil")
    with pytest.raises(ArchiveError, match="zip-slip"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unresolvable_or_corrupt_archives_fail_with_a_reason(
        net: FakeNet, root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    members = {k.replace("glioma_tumor/", "gliomas/"): v for k, v in _members("released").items()}
    _zip(tmp_path / "x" / "bad.zip", members)
    extract_archive(tmp_path / "x" / "bad.zip", tmp_path / "x" / "out")
    with pytest.raises(ArchiveError, match="no folder in the archive resolves the entries"):
        locate_layout(tmp_path / "x" / "out", BTMRI)
    net.hub_error = OSError("offline")
    (root / DOWNLOADS_DIR).mkdir(parents=True)
    (root / DOWNLOADS_DIR / "BTMRI.zip").write_bytes(b"not a zip")  # a stale Drive download
    net.archives["BTMRI.zip"] = root / DOWNLOADS_DIR / "BTMRI.zip"
    net.drive_error = None
    rc, _, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "--source", "gdrive")
    assert rc == 1 and "is not a valid zip archive" in err
    assert not (root / DOWNLOADS_DIR).exists()  # the bad file is deleted so that a rerun downloads afresh


def test_synthmed_points_to_the_generator(net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "synthmed")
    assert rc == 1
    assert f"SynthMed: not downloadable (it is generated); run: python scripts/make_synthetic_data.py --root {root}" \
        in err
    assert not net.hub_calls and not net.drive_calls


def test_names_unknown_and_case_insensitive(net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "--root", str(root), "--datasets", "btmr")
    assert rc == 2 and "Did you mean 'btmri'" in err
    _serve(net)
    rc, out, _ = _run(capsys, "--root", str(root), "--datasets", "Btmri", "BTMRI")
    assert rc == 0 and out.count("BTMRI: downloaded") == 1  # resolved once


def test_short_reason_is_one_line_with_the_root_cause() -> None:
    try:
        try:
            raise OSError("[Errno -2] Name or service not known")
        except OSError as inner:
            raise RuntimeError("Cannot reach https://huggingface.co/api/x/y.zip: long\nsecond line") from inner
    except RuntimeError as err:
        assert short_reason(err) == "OSError: [Errno -2] Name or service not known"
    assert short_reason(ValueError("see https://huggingface.co/a/b: x\ny")) == "ValueError: see huggingface.co: x"


def test_an_unreachable_host_is_not_retried_for_every_dataset(
        net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    net.hub_error = ConnectionError("hub down")
    net.drive_error = socket.gaierror(-2, "Name or service not known")
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "busi", "covid")
    assert rc == 1
    assert len(net.hub_calls) == 1 and len(net.drive_calls) == 1  # later datasets fail at once
    assert err.count("download failed") == 3 and "(not tried)" in err


def test_offline_one_probe_one_line_per_dataset_and_the_folder_to_copy(
        net: FakeNet, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net.unreachable.add("drive.google.com")
    rc, out, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "busi", "covid")
    assert rc == 1
    assert not net.hub_calls and not net.drive_calls  # nothing waits on a client's timeouts and retries
    assert net.probes == ["drive.google.com"]  # the hub is not probed under HF_HUB_OFFLINE; one probe in all
    lines = err.strip().splitlines()
    assert lines[0] == ("network: Hugging Face hub: HF_HUB_OFFLINE is set; Google Drive: drive.google.com "
                        "unreachable (OSError: [Errno 101] Network is unreachable)")
    assert len(lines) == 4  # the probe line, then one line per dataset
    for line, (name, config) in zip(lines[1:], [("BTMRI", "btmri"), ("BUSI", "busi"), ("COVID_19", "covid")]):
        assert line.startswith(f"{name}: download failed (hub: HF_HUB_OFFLINE is set (not tried); drive: ")
        assert f"then copy its folder data/{name}/ to {root.resolve()}/{name}/" in line
        assert f"--archive {name}.zip --datasets {config}" in line
    assert out.strip().splitlines()[-1] == "0 ready, 3 failed: BTMRI BUSI COVID_19"


def test_reachable_sources_are_probed_once_and_used(net: FakeNet, root: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _serve(net)
    _serve(net, name="BUSI")
    rc, _, err = _run(capsys, "--root", str(root), "--datasets", "btmri", "busi")
    assert rc == 0, err
    assert net.probes == ["huggingface.co", "drive.google.com"] and len(net.hub_calls) == 2
    assert "network:" not in err


def test_archive_fetched_by_hand_is_installed_and_verified(net: FakeNet, root: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    archive = _zip(tmp_path / "hand" / "BTMRI.zip", _members("wrapper"))
    rc, out, err = _run(capsys, "--root", str(root), "--archive", str(archive), "--datasets", "btmri")
    assert rc == 0, err
    assert f"BTMRI: installed from {archive}, verified" in out
    assert verify_dataset(root, BTMRI)["ok"] and archive.is_file()  # the user's file is left alone
    assert not net.hub_calls and not net.drive_calls and not net.probes
    _assert_clean(root)
    broken = tmp_path / "hand" / "broken.zip"
    broken.write_bytes(b"not a zip")
    rc, _, err = _run(capsys, "--root", str(tmp_path / "other"), "--archive", str(broken), "--datasets", "busi")
    assert rc == 1 and err.startswith("BUSI: install failed:") and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "--root", str(root), "--archive", str(archive), "--datasets", "btmri", "busi")
    assert rc == 2 and "exactly one --datasets NAME" in err
    rc, _, err = _run(capsys, "--root", str(root), "--archive", str(tmp_path / "nope.zip"), "--datasets", "btmri")
    assert rc == 1 and "archive not found" in err
