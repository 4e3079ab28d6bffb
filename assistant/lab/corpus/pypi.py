"""Rust from PyPI (issue 19, more Rust): the source distributions of Python packages written in Rust (ruff, uv,
polars, …) hold whole Cargo workspaces under permissive licenses, and PyPI is reachable where crates.io is not.

Each sdist is pinned (project, version, license as PyPI and its Cargo.toml state it, sha256), fetched once from
where PyPI's JSON API points, and unpacked (its `.rs` files and Cargo manifests only). The corpus takes them
for training only, like rust-src (build.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = "pypi"
API = "https://pypi.org/pypi/{project}/json"
KEPT = (".rs", "Cargo.toml", ".gitignore")      # what an sdist's tree gives the corpus (walk_rust_files reads these)


@dataclass(frozen=True)
class Sdist:
    project: str
    version: str
    license: str       # for a crate whose Cargo.toml names none (or inherits its workspace's)
    sha256: str        # of the source distribution, as PyPI lists it

    @property
    def file_name(self) -> str:
        return f"{self.project}-{self.version}.tar.gz"


SDISTS = (
    Sdist("ruff", "0.17.6", "MIT",
          "2b04276561331300325040bdca21460770029ec574d4c479099e39e8ad1ed43c"),
    Sdist("uv", "0.13.9", "MIT OR Apache-2.0",
          "dd6f4f93ddf8a668c73f0945f3638444b2140a4e15a3912067493fc6335543e4"),
    Sdist("polars-runtime-32", "2.1.0", "MIT",     # polars' Rust (the `polars` sdist is Python only)
          "c575f5f3cdb8a5f9be65477b9b4202b062593687fe62a0082add87fbd4571067"),
    Sdist("pydantic-core", "2.50.5", "MIT",
          "1e740886083ff95530d694e6a3f09ed914bcf92a496d16acd307c6c3484fc36d"),
    Sdist("tokenizers", "0.23.3", "Apache-2.0",
          "cded33237c77caeef62944d32aa9a7ef42bdce2b3497e18d137e072a8c4be438"),
    Sdist("jiter", "0.19.0", "MIT",
          "ba3064f8be276d7cfb83c2fb85c858be533da2c2f80f9b048c3781b45a57a195"),
    Sdist("watchfiles", "1.3.0", "MIT",
          "99aee4a07847c06820765fd7b1b49ceac4f3f711ccb7d104655a33231de1c207"),
    Sdist("py-spy", "0.4.3", "MIT",
          "65ac4319f8c20dcd1e2ea219935c6b4fd98179b0b7faf59181eae2680a85fad4"),
    Sdist("rust-just", "1.59.0", "CC0-1.0",
          "0859a87e37e249594ecb56ce740dd7e97d2c2d2ecea45ca0714555b7367512c2"),
    Sdist("ast-grep-cli", "0.51.1", "MIT",
          "8141811f78542527d9ebfb51eefd8a1dd24d132ca775dda3d7dbdbe05437510d"),
    Sdist("maturin", "1.16.0", "MIT OR Apache-2.0",
          "13e69ca12542999d8c5467131de72a49bb76e4c284b9a45c5783df7c0fcb3a8a"),
    Sdist("cryptography", "50.0.2", "Apache-2.0 OR BSD-3-Clause",
          "7b46165bb56eb4704e2eaaf86f3c940d19154535d9b0ca7d6d590b04060e00d5"),
    Sdist("deltalake", "1.6.6", "Apache-2.0",
          "91864d97adb429fa8b8748b4f68d69adab3d0417ffa9f100bdb85805890c997f"),
    Sdist("datafusion", "55.0.0", "Apache-2.0",
          "12ac1a7666cd61533f610d38173347aa42189b7a1a78c78bb166052b680ffb6d"),
    Sdist("pyoxigraph", "0.5.13", "MIT OR Apache-2.0",
          "1805b92b51293f658557ae53b4eb42ac4dc826959ccff1c5c0f5067ac570b073"),
    Sdist("granian", "2.8.9", "BSD-3-Clause",
          "fb5af2059bc43b9d3ad875eabf987d1fbbcfedfc40f676d65b0a0cdb4cf9319f"),
    Sdist("css-inline", "0.24.0", "MIT",
          "bb5f6d5625fa570a181ddc2138af7f57247995eaac7478a5eedb69f4b4a9bcfa"),
    Sdist("typos", "1.52.2", "MIT OR Apache-2.0",
          "7eb832b2ec5d0459b721fcb1c832a428c6491b140c28765b62494e8ce0d560b0"),
    Sdist("safetensors", "0.8.0", "Apache-2.0",
          "fabaf3e0f18a6618d9b36560682562157f77c2b71fcffc7b432be2baed9d753d"),
    Sdist("rpds-py", "2026.9.1", "MIT",
          "4793ef7f78268b124b73fa933440f01d258bbae01de9fa53e9080c9ab0425a12"),
    Sdist("rtoml", "0.14.0", "MIT",
          "e0f95a59e3fac6394985d59ce18a0c06f2176f2eb9dec2fb8c1105febaf05c59"),
    Sdist("ormsgpack", "1.13.1", "Apache-2.0 OR MIT",
          "803143ae0ab68e55baa14967595332e5c372b7f27f1ddf1b5b115329b17ccc41"),
    Sdist("blake3", "1.0.11", "CC0-1.0 OR Apache-2.0",
          "d73c0a87304d41045f6753a922113bede3ab09eda2d20371566a5bbe357c3deb"),
    Sdist("rignore", "0.8.1", "MIT",
          "2b6cf58501e9ff1b6a71c3fd66c8a105311e1f23237626fd4c9c00606bb3d30f"),
    Sdist("cramjam", "2.14.0", "MIT",
          "050095380dc01a7f3dc2b8bcd9de2cbf4a208a8aab32301c760ea3c280d641bd"),
    Sdist("tiktoken", "0.14.0", "MIT",
          "231dec90efcdccf1b565a1416107736f1e09b1a08fe736ef9d6363e626d03874"),
    Sdist("pendulum", "3.3.0", "MIT",
          "9aceb5b24e9f55381df08187397e88546b5ba82f698b741cbf1a05c5e2369116"),
    Sdist("rustworkx", "0.18.1", "Apache-2.0",
          "30affe6ee52a6257a01152418f9c1686ca114e7ab4a3bf87bb87fe35b7350f3e"),
    Sdist("pycrdt", "0.14.13", "MIT",
          "cbed47427bf9d6f9dd77763749354a7d991f55581d6b917f2823c03095d55988"),
    Sdist("nh3", "0.3.8", "MIT",
          "5c5a315abc2e9d5d78ce1ba6b592a1ef8cbc7e535dfb1e641966768e87870fe3"),
    Sdist("libcst", "1.9.0", "MIT",
          "087b58a9afe076bb08e2d726478e1f16cb928d67ffa9092817e033c335de522a"),
    Sdist("tantivy", "0.27.0", "MIT",
          "871d0dc8d3b246d6b8cbf99a2f0ec929eb4e3341ecb3a63e3c7c11c6715cd03d"),
    Sdist("uuid-utils", "1.2.0", "BSD-3-Clause",
          "8a8bd1120a8bc5a6656a1c580d66a050af430b05d017da526ec0b0a06715bf70"),
    Sdist("whenever", "0.11.0", "MIT",
          "e458c72a08fb03cab5adedfd2b34aa35c389091f07f73892a1fb281742535a5c"),
    Sdist("fastexcel", "0.21.0", "MIT",
          "07313c1267ab47ba639abf1122efd5985a1fb08efc996194f422ab17f06149c5"),
    Sdist("python-calamine", "0.9.1", "MIT",
          "458094c3dd41bd330c0a43d20e23489964ba28b3301687f1c5acc03c81d06a9f"),
    Sdist("arro3-core", "0.9.1", "MIT OR Apache-2.0",
          "bb12dca132b26142fb80a4270d5cc707df4f60c2a927a45c8f0e204e9354ae78"),
    Sdist("obstore", "0.12.1", "MIT",
          "80549c9ea5478fd5d5bd75a3c9178841c7108a76d8139db05407a25a55a6a476"),
    Sdist("outlines-core", "0.2.14", "Apache-2.0",
          "64808deed1591ca3029ff64346ceb974cd5d780c916ea82504951fe83523039e"),
    Sdist("llguidance", "1.9.1", "MIT",
          "3ba1b37585d07f50bb73e06dca6d45c88c9d5801789c071c8ff784c9dbcc5c46"),
    Sdist("zizmor", "1.33.1", "MIT",
          "d4ec8974b3cbd6e997ceac7cd788b0d49392d1683bb509cd4a897fcccf79c71a"),
    Sdist("minijinja", "3.1.0", "Apache-2.0",
          "5214dc92589c56889e3f88199259bb236bba6ca51e72ea1aa06c83cddb590a84"),
    Sdist("jellyfish", "1.3.0", "MIT",
          "fd77ba8e1c9835d2c56b11bde6765380cbcac333037974c4ba4b60092c383212"),
    Sdist("pyxirr", "0.10.8", "Unlicense",
          "a5620dd76015444f26f805c4983a41664898fbf2a74956a28589b171ed96d2f5"),
    Sdist("qiskit", "2.6.2", "Apache-2.0",
          "b85b5f7b56700b864cc06dbfb33f01453a42024cf5ab954a0e0a275127ebd255"),
    Sdist("pyrefly", "1.5.1", "MIT",
          "08dd4d704160a49f2b655b04603065ca414a90b9c04ebc2f4581af26f282f723"),
    Sdist("primp", "2.0.1", "MIT",
          "82ba17b077bef19a189d9ec8d77ca632496cb444e0f4fa37e27e90041cf0da8f"),
    Sdist("fastuuid", "0.14.0", "BSD-3-Clause",
          "178947fc2f995b38497a74172adee64fdeb8b7ec18f2a5934d037641ba265d26"),
)


@dataclass
class PypiReport:
    sdists: int = 0
    downloaded: int = 0
    already_had: int = 0
    failed: list[str] = field(default_factory=list)


def _url(sdist: Sdist) -> str:
    """Where PyPI's JSON API says the release's source distribution is (the link may be relative to the API)."""
    api = API.format(project=sdist.project)
    with urllib.request.urlopen(api, timeout=60) as reply:
        files = json.load(reply).get("releases", {}).get(sdist.version, [])
    sdists = [f for f in files if f["packagetype"] == "sdist"]
    if not sdists:
        raise ValueError(f"{sdist.project} {sdist.version} has no source distribution on PyPI")
    return urllib.parse.urljoin(api, sdists[0]["url"])


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch(sdist: Sdist, folder: Path) -> tuple[Path, bool]:
    """The sdist's tarball in `folder`: the copy there when it has the pinned sha256 (no network), else downloaded
    now; and whether it was downloaded."""
    path = folder / sdist.file_name
    if path.is_file() and _sha256(path) == sdist.sha256:
        return path, False
    partial = path.with_name(path.name + ".part")
    with urllib.request.urlopen(_url(sdist), timeout=300) as reply, partial.open("wb") as out:
        while block := reply.read(1 << 20):
            out.write(block)
    if _sha256(partial) != sdist.sha256:
        partial.unlink()
        raise ValueError(f"{sdist.file_name}: the download does not have the pinned sha256")
    partial.replace(path)
    return path, True


def unpack(tarball: Path, dest: Path) -> Path:
    """The tarball's `.rs` files and Cargo manifests under `dest` (once); the sdist's top folder."""
    done = dest / (tarball.name + ".unpacked")
    with tarfile.open(tarball) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(KEPT)]
        tops = {m.name.split("/", 1)[0] for m in members}
        if not tops:
            raise ValueError(f"{tarball.name}: no Rust in it (no .rs file or Cargo manifest)")
        if len(tops) != 1:
            raise ValueError(f"{tarball.name}: expected one top folder, found {sorted(tops)[:3]}")
        if not done.is_file():
            archive.extractall(dest, members=members, filter="data")   # "data": no links out, no absolute paths
            done.touch()
    return dest / tops.pop()


def sdist_trees(dest: Path, sdists: tuple[Sdist, ...], report: PypiReport,
                advance: Callable[[int], None] = lambda n: None) -> list[tuple[Path, Sdist]]:
    """Fetch and unpack each sdist (a failure is reported and skipped); their trees."""
    trees = []
    (dest / "sdists").mkdir(parents=True, exist_ok=True)
    for sdist in sdists:
        report.sdists += 1
        try:
            tarball, downloaded = fetch(sdist, dest / "sdists")
            trees.append((unpack(tarball, dest / "root"), sdist))
            report.downloaded += downloaded
            report.already_had += not downloaded
        except (OSError, ValueError, KeyError, tarfile.TarError) as err:
            log.warning("%s %s: %s", sdist.project, sdist.version, err)
            report.failed.append(f"{sdist.project}=={sdist.version}")
        advance(1)
    return trees
