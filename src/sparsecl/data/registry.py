"""Datasets by name: which files each needs, where they are looked for, how they are checked and read.

``load_dataset("fashion-mnist")`` looks for a directory holding every needed file, in this order:

1. the ``root`` argument: ``root`` itself, then ``root/<name>``;
2. ``$SPARSECL_DATA/<name>``;
3. the user cache, ``$XDG_CACHE_HOME/sparsecl/<name>`` (default ``~/.cache/sparsecl/<name>``);
4. system locations, e.g. ``/usr/share/datasets/fashion-mnist`` from Debian's ``dataset-fashion-mnist``;

and, failing all, downloads the official files into the user cache (unless ``download=False``). When
nothing works, one DataError line lists every place looked and how to fix it. A folder the user named
(``root``, ``$SPARSECL_DATA``) that holds some of the files but not all is an error naming the missing
file, never a silent fall-back to another copy.

Every load verifies what it reads: the checksum of each file with a published one is computed in the same
read as the parse, once; the result is remembered in ``<user cache>/verified.json`` by path, size and
mtime, so later loads only compare those (a file that changed in size or time is checked again). A file
that fails its checksum is refused, naming it.

Checksums are the MD5s published by the dataset authors (as used by torchvision); for the gzip'ed IDX
files the MD5 of the uncompressed content is recorded too, so re-compressed (Debian) or gunzipped copies
verify. Channel mean/std are the usual published statistics of the training split in [0, 1].
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparsecl.data.checks import FileSpec, Opener, VerifiedCache, VerifyingOpener, read_payload
from sparsecl.data.dataset import ArrayDataset, DataError, channel_stats
from sparsecl.data.download import Download, fetch
from sparsecl.data.folder import ImageFolderReader, class_folders
from sparsecl.data.readers import (
    CifarReader,
    DigitsReader,
    IdxReader,
    MissingDependencyError,
    Splits,
    TinyImageNetReader,
)
from sparsecl.registry import Registry

ENV_VAR = "SPARSECL_DATA"
Reader = Callable[[Path, int, Opener], Splits]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sparsecl`` when that is an absolute path (the XDG rule), else ``~/.cache/sparsecl``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "sparsecl"


def _no_dirs() -> tuple[Path, ...]:
    return ()


@dataclass(frozen=True)
class DatasetSpec:
    """Everything sparsecl knows about one dataset; ``mean``/``std`` None means computed from the train split."""

    name: str
    reader: Reader
    num_classes: int
    files: tuple[FileSpec, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    downloads: tuple[Download, ...] = ()
    system_dirs: Callable[[], tuple[Path, ...]] = _no_dirs
    install_hint: str = ""
    homepage: str = ""

    def __post_init__(self) -> None:
        if self.num_classes < 2 or not self.files:
            raise ValueError(f"dataset {self.name!r}: needs num_classes >= 2 and at least one file")
        if (self.mean is None) != (self.std is None) or len(self.mean or ()) != len(self.std or ()):
            raise ValueError(f"dataset {self.name!r}: mean and std must both be given, one value per channel")

    def has_files(self, directory: Path) -> bool:
        return all(f.locate(directory) is not None for f in self.files)

    def search_dirs(self, root: str | Path | None = None) -> list[tuple[str, Path]]:
        """The candidate directories, in lookup order, each with where it came from."""
        places = []
        if root is not None:
            root = Path(root).expanduser()
            places += [("root", root), ("root", root / self.name)]
        if os.environ.get(ENV_VAR):
            places.append((f"${ENV_VAR}", Path(os.environ[ENV_VAR]).expanduser() / self.name))
        places.append(("user cache", cache_dir() / self.name))
        return places + [("system", d) for d in self.system_dirs()]

    def find(self, root: str | Path | None = None) -> Path | None:
        for origin, d in self.search_dirs(root):
            if self.has_files(d):
                return d
            if origin in ("root", f"${ENV_VAR}"):
                self._refuse_partial(d)
        return None

    def _refuse_partial(self, directory: Path) -> None:
        """A user-named folder with some of this dataset's files but not all is an error, not a fall-back."""
        present = [f for f in self.files if f.locate(directory) is not None]
        if present and len(present) < len(self.files):
            missing = [f.path for f in self.files if f.locate(directory) is None]
            also = f"; also missing: {', '.join(missing[1:])}" if missing[1:] else ""
            raise DataError(f"{directory / missing[0]}: missing file: {directory} holds part of {self.name} "
                            f"({len(present)} of {len(self.files)} files{also}); add it, or remove the folder "
                            f"from data_dir/{ENV_VAR} to use another copy")

    def read(self, directory: Path, opener: Opener = read_payload) -> ArrayDataset:
        s = self.reader(directory, self.num_classes, opener)
        mean, std = (self.mean, self.std) if self.mean is not None else channel_stats(s.x_train)
        return ArrayDataset(self.name, s.x_train, s.y_train, s.x_test, s.y_test, self.num_classes, mean, std)

    def load(self, root: str | Path | None = None, download: bool | None = None, verify: bool = True) -> ArrayDataset:
        """Find (or, unless ``download`` is False, download) the files, read them, and unless ``verify`` is
        False (your own copy in the same format, e.g. a subset) check them against the published checksums."""
        directory = self.find(root)
        directory = directory if directory is not None else self.download_to_cache(root, download)
        if not verify:
            return self.read(directory)
        cache = VerifiedCache(cache_dir() / "verified.json")
        opener = VerifyingOpener(directory, [f for f in self.files if not cache.known(f.locate(directory))])
        data = self.read(directory, opener)
        problems = opener.finish()
        if problems:
            raise DataError(f"{problems[0]}; the file is damaged or not the published one: replace it, delete "
                            f"it to download again, or set verify_data=false for a copy of your own")
        cache.remember(opener.verified)
        return data

    def download_to_cache(self, root: str | Path | None = None, download: bool | None = None) -> Path:
        """Download into the user cache; any failure is the one-line not-found error, with the reason."""
        if download is False:
            raise self.not_found(root, "download disabled (download=False)")
        if not self.downloads:
            raise self.not_found(root, "it cannot be downloaded")
        target = cache_dir() / self.name
        try:
            fetch(self.downloads, target)
        except DataError as e:
            raise self.not_found(root, f"download failed: {e}") from None
        if not self.has_files(target):
            missing = [f.path for f in self.files if f.locate(target) is None]
            raise DataError(f"{target}: the download did not provide {', '.join(missing)}")
        return target

    def not_found(self, root: str | Path | None, reason: str) -> DataError:
        looked = ", ".join(f"{d} ({origin})" for origin, d in self.search_dirs(root))
        hint = f"{self.install_hint}, or " if self.install_hint else ""
        files = ", ".join(f.path for f in self.files)
        return DataError(f"dataset {self.name!r} not found in: {looked}; {reason}; to fix: {hint}put {files} "
                         f"in one of those directories, or set {ENV_VAR} to a directory holding {self.name}/")

    def how_to_get(self) -> str:
        """One line on how to get this dataset when it is missing (``sparsecl datasets`` prints it)."""
        ways = []
        if self.install_hint:
            ways.append(self.install_hint)
        if self.downloads:
            first = self.downloads[0].urls[0]
            urls = first if len(self.downloads) == 1 else f"{len(self.downloads)} files from {first.rsplit('/', 1)[0]}/"
            ways.append(f"`sparsecl train dataset={self.name} download=true ...` fetches {urls} into "
                        f"{cache_dir() / self.name} (checksum-verified)")
        files = ", ".join(dict.fromkeys(f.path.split("/")[0] + ("/" if "/" in f.path else "") for f in self.files))
        ways.append(f"or put {files} in ${ENV_VAR}/{self.name}/ (or pass data_dir=)")
        return "; ".join(ways)

    def inspect(self, directory: Path) -> tuple[list[str], ArrayDataset | None]:
        """Problems found (checksums, then format) and the dataset when it parses; each file is read once.
        A missing optional dependency (Pillow) propagates as MissingDependencyError."""
        opener = VerifyingOpener(directory, self.files)
        try:
            data, errors = self.read(directory, opener), []
        except MissingDependencyError:
            raise
        except DataError as e:
            data, errors = None, [str(e)]
        return opener.finish() + errors, data

    def verify(self, root: str | Path | None = None) -> list[str]:
        directory = self.find(root)
        if directory is None:
            return [str(self.not_found(root, "nothing to verify"))]
        try:
            return self.inspect(directory)[0]
        except MissingDependencyError as e:
            return [str(e)]


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _add(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name)(spec)


def _idx(md5s: dict[str, tuple[str, str]],
         mirrors: tuple[str, ...]) -> tuple[tuple[FileSpec, ...], tuple[Download, ...]]:
    """FileSpecs and Downloads of the four IDX files from {name: (md5 of the .gz, md5 of its content)}."""
    files = tuple(FileSpec(name, gz, raw) for name, (gz, raw) in md5s.items())
    return files, tuple(Download(name, tuple(m + name for m in mirrors), gz) for name, (gz, _) in md5s.items())


def _sklearn_data_dir() -> tuple[Path, ...]:
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    return (Path(spec.origin).parent / "datasets" / "data",) if spec and spec.origin else ()


_FASHION_FILES, _FASHION_DOWNLOADS = _idx({
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}, ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"))
_add(DatasetSpec(
    "fashion-mnist", IdxReader((28, 28)), 10, _FASHION_FILES, (0.2860,), (0.3530,), _FASHION_DOWNLOADS,
    lambda: (Path("/usr/share/datasets/fashion-mnist"),), "apt-get install dataset-fashion-mnist",
    "https://github.com/zalandoresearch/fashion-mnist (Xiao et al., 2017)"))

_MNIST_FILES, _MNIST_DOWNLOADS = _idx({
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}, ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"))
_add(DatasetSpec(
    "mnist", IdxReader((28, 28)), 10, _MNIST_FILES, (0.1307,), (0.3081,), _MNIST_DOWNLOADS,
    lambda: (Path("/usr/share/datasets/mnist"),), homepage="http://yann.lecun.com/exdb/mnist/ (LeCun et al., 1998)"))

_add(DatasetSpec(
    "cifar10", CifarReader("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                           "labels"), 10,
    tuple(FileSpec(f"cifar-10-batches-py/{n}", md5) for n, md5 in (
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"), ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"), ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"), ("test_batch", "40351d587109b95175f43aff81a1287e"))),
    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    (Download("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
              "c58f30108f718f92721af3b95e74349a", extract=True),),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky, 2009)"))

_add(DatasetSpec(
    "cifar100", CifarReader("cifar-100-python", ("train",), ("test",), "fine_labels"), 100,
    (FileSpec("cifar-100-python/train", "16019d7e3df5f24257cddd939b257f8d"),
     FileSpec("cifar-100-python/test", "f0ef6b0ae62326f3e7ffdfab6717acfc")),
    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
    (Download("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
              "eb9058c3a382ffc7106e4002c42a8d85", extract=True),),
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky, 2009)"))

_add(DatasetSpec(
    "tiny-imagenet", TinyImageNetReader(), 200,
    tuple(FileSpec(f"tiny-imagenet-200/{p}") for p in ("wnids.txt", "train", "val/val_annotations.txt", "val/images")),
    (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
    (Download("tiny-imagenet-200.zip", ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
              "90528d7ca1a48142e341f4ef8d21d0de", extract=True),),
    homepage="http://cs231n.stanford.edu/ (Le & Yang, 2015); needs Pillow"))

# shipped inside scikit-learn (its wheel's RECORD hashes vouch for it), hence no checksum and no download
_add(DatasetSpec(
    "digits", DigitsReader(), 10, (FileSpec("digits.csv.gz"),), system_dirs=_sklearn_data_dir,
    install_hint="pip install 'sparsecl[digits]' (the extra installs scikit-learn, which ships the digits)",
    homepage="sklearn.datasets.load_digits: UCI optical digits test set (Alpaydin & Kaynak, 1998)"))


class InMemoryDataset:
    """A dataset registered from tensors (``register_dataset``): nothing to find, check or download."""

    def __init__(self, name: str, source: ArrayDataset | Callable[[], ArrayDataset]) -> None:
        self.name, self._source, self._data = name, source, None

    def load(self, root: str | Path | None = None, download: bool | None = None,  # noqa: ARG002
             verify: bool = True) -> ArrayDataset:  # noqa: ARG002
        if self._data is None:
            data = self._source() if callable(self._source) else self._source
            if not isinstance(data, ArrayDataset):
                raise DataError(f"dataset {self.name!r}: its source gave {type(data).__name__}, not an ArrayDataset")
            self._data = data
        return self._data

    @property
    def num_classes(self) -> int:
        return self.load().num_classes

    def find(self, root: str | Path | None = None) -> Path | None:  # noqa: ARG002
        return None

    def verify(self, root: str | Path | None = None) -> list[str]:  # noqa: ARG002
        return []

    def how_to_get(self) -> str:
        return f"register_dataset({self.name!r}, ...) in the process that uses it (it lives in memory)"

    def how_to_get(self) -> str:
        return f"registered from tensors by sparsecl.register_dataset({self.name!r}, ...) in this process"


def register_dataset(name: str, source: ArrayDataset | Callable[[], ArrayDataset]) -> None:
    """Make your own tensors a dataset by name (``dataset=<name>`` in a config of this process).
    ``source``: an ``ArrayDataset`` (``ArrayDataset.from_tensors``) or a function returning one, called
    at the first load."""
    DATASETS.register(name)(InMemoryDataset(name, source))


def register_image_folder(name: str, root: str | Path, mode: str = "RGB") -> DatasetSpec:
    """Make an image folder (``root/{train,test}/<class>/<image>``, see ``sparsecl.data.folder``) a dataset
    by name; ``mode`` "L" reads grey images, "RGB" colour. Channel mean/std come from its training split."""
    root = Path(root).expanduser()
    spec = DatasetSpec(name, ImageFolderReader(mode), len(class_folders(root / "train")),
                       (FileSpec("train"), FileSpec("test")), system_dirs=lambda: (root,),
                       homepage=f"image folder {root}")
    _add(spec)
    return spec


def load_dataset(name: str, root: str | Path | None = None, download: bool | None = None,
                 verify: bool = True) -> ArrayDataset:
    """The dataset ``name`` as uint8/int64 tensors; see the module docstring for where files are looked for.

    ``download``: None (default) or True downloads into the user cache when the files are found nowhere;
    False never downloads. ``verify``: check the files against their published checksums (see the module
    docstring). Raises UnknownNameError (listing valid names) or a one-line DataError.
    """
    return DATASETS.get(name).load(root, download, verify)


def find_dataset(name: str, root: str | Path | None = None) -> Path | None:
    """The first directory in lookup order holding every file ``name`` needs, or None."""
    return DATASETS.get(name).find(root)


def verify_dataset(name: str, root: str | Path | None = None) -> list[str]:
    """Problems with the copy of ``name`` that would be loaded (checksums where published, then format);
    an empty list means it is OK."""
    return DATASETS.get(name).verify(root)


def datasets_report(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per registered dataset for ``sparsecl datasets``, reading each found dataset once.

    Keys: name, path (str or None), status ("ok", "missing", "corrupt: <problems>", or "unreadable: <why>"
    when an optional dependency is missing), train and test sizes (None unless it parsed), num_classes,
    how_to_get (one line for a missing set, else None).
    """
    rows = []
    for name in DATASETS:
        spec = DATASETS.get(name)
        directory = spec.find(root)
        in_memory = isinstance(spec, InMemoryDataset)
        row: dict[str, Any] = {"name": name, "path": str(directory) if directory else None,
                               "status": "in memory" if in_memory else "missing",
                               "train": None, "test": None, "num_classes": spec.num_classes,
                               "how_to_get": None if directory or in_memory else spec.how_to_get()}
        if directory is not None:
            try:
                problems, data = spec.inspect(directory)
            except MissingDependencyError as e:
                row["status"] = f"unreadable: {e}"
            else:
                row["status"] = "corrupt: " + "; ".join(problems) if problems else "ok"
                if data is not None:
                    row.update(train=len(data.y_train), test=len(data.y_test))
        rows.append(row)
    return rows
