"""CLIP_benchmark's webdataset layout (`wds:PATH`), read in place.

    PATH/classnames.txt                             one class name per line, in label order
    PATH/zeroshot_classification_templates.txt      one template per line, class slot `{c}` (optional)
    PATH/dataset_type.txt                           `multilabel` or `retrieval` (optional)
    PATH/<split>/nshards.txt                        N
    PATH/<split>/0.tar … N-1.tar                    samples KEY.webp|png|jpg|jpeg + KEY.cls (integer label),
                                                    or KEY.npy (0/1 vector over the classes) when multi-label,
                                                    or KEY.txt (the image's captions, one per line) for
                                                    retrieval (no classnames.txt then)

This is what `clip_benchmark.webdataset_builder` writes and what the `clip-benchmark/wds_*` repositories
on the Hugging Face Hub hold. Tar shards are indexed once (member offsets) and images are read by
seeking to them, so any item can be decoded on its own: nothing is extracted, and the feature cache,
decoding workers and ranks work on tar-held images as on files.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pixprompt.data.datasets import DatasetOptions, ImageDataset
from pixprompt.data.images import DEFAULT_MAX_PIXELS, decode_rgb
from pixprompt.data.registry import source
from pixprompt.errors import UnavailableError, UsageError, first_line
from pixprompt.readers import read_text

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
TEMPLATES_FILE = "zeroshot_classification_templates.txt"


@dataclass
class TarImages:
    """Images held as members of tar shards, read by offset; an item's id is its shard (with the shard's size
    and modification time) and member name."""

    shards: list[Path]
    shard_of: list[int]
    offsets: list[int]
    sizes: list[int]
    names: list[str]
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    #: Samples that are listed but never read, by position, with why (a member that is a link, a folder or a
    #: device; a sample key that appears twice): each is an error row, counted in `skipped` and named.
    refused: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def add(self, shard: int, offset: int, size: int, name: str, refused: str | None = None) -> None:
        """List one item: its shard, its member's bytes and name (and why it is refused, if it is)."""
        if refused is not None:
            self.refused[len(self.names)] = refused
        self.shard_of.append(shard)
        self.offsets.append(offset)
        self.sizes.append(size)
        self.names.append(name)

    def load(self, index: int) -> Image.Image:
        if index in self.refused:
            raise ValueError(self.refused[index])
        with open(self.shards[self.shard_of[index]], "rb") as shard:
            shard.seek(self.offsets[index])
            data = shard.read(self.sizes[index])
        if len(data) < self.sizes[index]:
            raise ValueError(f"truncated: the shard ends {self.sizes[index] - len(data)} bytes into this member")
        return decode_rgb(_Member(data, self.describe(index)), None, self.max_pixels)

    def item_id(self, index: int) -> str:
        shard = self.shards[self.shard_of[index]]
        stat = shard.stat()
        return f"{shard.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.names[index]}"

    def describe(self, index: int) -> str:
        return f"{self.shards[self.shard_of[index]]}:{self.names[index]}"


#: The largest image member read (a tar header may declare any size: a sparse member costs nothing on disk).
MAX_IMAGE_MEMBER_BYTES = 256 * 2**20
#: A `.cls` member holds a number; a `.npy` label vector has one entry per class.
MAX_CLS_BYTES = 64
MAX_NPY_ENTRIES = 1 << 20
#: A `.txt` member holds one image's captions, one per line (Flickr30k and COCO have 5).
MAX_CAPTION_BYTES = 1 << 20
MAX_CAPTIONS = 1000
#: Leading bytes of compressed files: a shard is read in place by member offsets, so it must be a plain tar.
COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


class _Member(io.BytesIO):
    """A tar member's bytes, shown by its name in decoders' messages (not as `<_io.BytesIO object at 0x…>`)."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _read_lines(path: Path) -> list[str]:
    text = read_text(path, "webdataset file")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _shard_count(count_file: Path) -> int:
    """nshards.txt's number, checked against the shard files beside it (a huge number is refused, not listed)."""
    lines = _read_lines(count_file)
    text = lines[0] if lines else ""
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"{count_file} should hold the number of shards (1 or more), not {text[:40]!r}")
    present = sum(1 for _ in count_file.parent.glob("*.tar"))
    if int(text) > present:
        raise UnavailableError(f"{count_file} says {text[:20]} shards but {count_file.parent} holds {present} .tar "
                               "file(s): the download is incomplete or nshards.txt is wrong")
    return int(text)


def _compression(path: Path) -> str | None:
    with open(path, "rb") as shard:
        start = shard.read(6)
    return next((kind for magic, kind in COMPRESSED_MAGIC.items() if start.startswith(magic)), None)


def _sample_key(member: str) -> tuple[str, str]:
    """webdataset's split of a member name: the key is everything before the first dot of the file name."""
    folder, _, name = member.rpartition("/")
    stem, _, extension = name.partition(".")
    return f"{folder}/{stem}" if folder else stem, extension.lower()


def _vector(tar: tarfile.TarFile, member: tarfile.TarInfo) -> np.ndarray:
    """A `.npy` member's array, its size and declared shape bounded before it is read."""
    if member.size > 128 + 8 * MAX_NPY_ENTRIES:
        raise ValueError(f"{member.name} declares {member.size:,} bytes, more than a label vector")
    handle = tar.extractfile(member)
    try:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, _ = read_header(handle)
    except ValueError as error:
        raise ValueError(f"{member.name} is not a .npy array ({first_line(error, 80)})") from None
    if int(np.prod(shape, dtype=np.float64)) > MAX_NPY_ENTRIES:
        raise ValueError(f"{member.name} declares a {'×'.join(map(str, shape))} array, not a label vector")
    return np.load(io.BytesIO(tar.extractfile(member).read()), allow_pickle=False)


def _label(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> int | tuple[int, ...]:
    """A sample's integer label (`.cls`), or the classes its 0/1 vector marks (`.npy`, multi-label); a member
    of a size no label has, or that holds no label, is refused naming it before it is read."""
    if "cls" in members:
        member = members["cls"]
        if member.size > MAX_CLS_BYTES:
            raise ValueError(f"{member.name} declares {member.size:,} bytes, not a label's few")
        text = tar.extractfile(member).read().decode("utf-8", "replace").strip()
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{member.name} holds {text[:20]!r}, not an integer label") from None
    return tuple(int(c) for c in np.flatnonzero(_vector(tar, members["npy"])))


def _metadata(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], fields: Sequence[str],
              label: int | tuple[int, ...]) -> tuple[int, ...]:
    """A sample's group metadata (`.npy`, one integer per field: WILDS' and DataComp's fairness sets): integers only
    (a float or boolean would be read as another group id), and a `y` field equal to the sample's `.cls`."""
    if "npy" not in members:
        raise ValueError(f"{members['cls'].name}'s sample has no .npy group metadata")
    name = members["npy"].name
    vector = _vector(tar, members["npy"]).reshape(-1)
    if len(vector) != len(fields):
        raise ValueError(f"{name} holds {len(vector)} metadata values, not {len(fields)}")
    if vector.dtype.kind not in "iu":
        raise ValueError(f"{name} holds {vector.dtype} metadata, not integer group ids ({', '.join(fields)})")
    values = tuple(int(v) for v in vector)
    y = dict(zip(fields, values)).get("y", label)
    if y != label:
        raise ValueError(f"{name}'s y is {y} but its .cls says {label}: the label and the metadata disagree")
    return values


def _captions(tar: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[str, ...]:
    """A retrieval sample's captions (`.txt`, one per line, as CLIP_benchmark reads them), bounded in bytes and
    count before they are read."""
    if member.size > MAX_CAPTION_BYTES:
        raise ValueError(f"{member.name} declares {member.size:,} bytes, more than an image's captions")
    captions = tuple(line.strip() for line in tar.extractfile(member).read().decode("utf-8", "replace").splitlines()
                     if line.strip())
    if not captions or len(captions) > MAX_CAPTIONS:
        raise ValueError(f"{member.name} holds {len(captions)} captions (1 to {MAX_CAPTIONS} expected)")
    return captions


def index_shards(shards: list[Path], max_pixels: int | None, retrieval: bool = False,
                 metadata_fields: Sequence[str] = ()) -> tuple[TarImages, list, list[tuple[int, ...]]]:
    """Every sample's image member and label (see `_label`), or with `retrieval` its captions (`_captions`), in
    shard and member order; with `metadata_fields`, also each sample's group metadata (`_metadata`; the label is
    then its `.cls`)."""
    wanted = {"txt"} if retrieval else {"cls"} if metadata_fields else {"cls", "npy"}
    images = TarImages(shards, [], [], [], [], max_pixels)
    labels: list[int | tuple[int, ...]] = []
    metadata: list[tuple[int, ...]] = []
    for number, path in enumerate(shards):
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        compressed = _compression(path)
        if compressed:
            raise UnavailableError(f"webdataset shard {path} is {compressed}-compressed: pixprompt reads shards in "
                                   "place by member offset, so they must be plain tar files; decompress it first")
        size = path.stat().st_size
        refused: dict[str, tuple[str, str]] = {}  # sample key → (the member named, why the sample is not read)
        try:
            with tarfile.open(path, mode="r:") as tar:
                for member in tar:
                    key, extension = _sample_key(member.name)
                    members = samples.setdefault(key, {})
                    if extension not in IMAGE_EXTENSIONS and extension not in wanted | {"npy"}:
                        continue
                    if not member.isfile():  # webdataset skips these silently: here they are named
                        refused.setdefault(key, (member.name, f"{member.name} in {path.name} is "
                                                              f"{_member_kind(member)}, not a regular file"))
                    elif extension in members:  # which copy is meant is unknown: webdataset refuses it too
                        refused.setdefault(key, (member.name, f"sample key {key!r} appears twice in {path.name} "
                                                              f"(two .{extension} members): which one is meant is "
                                                              "unknown"))
                    else:
                        members[extension] = member
                for key, members in samples.items():
                    image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
                    if key in refused:
                        images.add(number, 0, 0, *refused[key])
                        labels.append(None)  # never scored: filled below with a label of the set's kind
                        metadata.extend([(0,) * len(metadata_fields)] if metadata_fields else [])
                        continue
                    if image is None or not wanted & members.keys():
                        continue  # a sample without an image or a label is no test item
                    if image.issparse() or image.size > MAX_IMAGE_MEMBER_BYTES:
                        raise ValueError(f"{image.name} declares {image.size:,} bytes"
                                         f"{' as a sparse member' if image.issparse() else ''}, not an image's")
                    if image.offset_data + image.size > size:
                        raise ValueError(f"truncated: {image.name} runs past the end of the file")
                    labels.append(_captions(tar, members["txt"]) if retrieval else _label(tar, members))
                    if metadata_fields:
                        metadata.append(_metadata(tar, members, metadata_fields, labels[-1]))
                    images.add(number, image.offset_data, image.size, image.name)
        except tarfile.ReadError as error:
            raise UnavailableError(f"webdataset shard {path} could not be read: it is truncated or not a tar file "
                                   f"({first_line(error, 120)})") from None
        except (OSError, tarfile.TarError, ValueError, EOFError) as error:
            raise UnavailableError(f"webdataset shard {path} could not be read ({first_line(error, 160)})") from None
    fill = () if retrieval or any(isinstance(label, tuple) for label in labels) else 0
    return images, [fill if label is None else label for label in labels], metadata


def _member_kind(member: tarfile.TarInfo) -> str:
    """What a tar member that is not a regular file is, in words."""
    return ("a symbolic link" if member.issym() else "a hard link" if member.islnk() else
            "a folder" if member.isdir() else "a device or FIFO")


@source("wds", takes_path=True)
def load_wds(path: str, options: DatasetOptions) -> ImageDataset:
    """A CLIP_benchmark webdataset folder's test split."""
    return load_webdataset(path)


@source("wds/")
def load_hosted(name: str, options: DatasetOptions) -> ImageDataset:
    """CLIP_benchmark's hosted copy of dataset `name`, fetched into the Hugging Face cache on first use."""
    return load_webdataset(str(fetch_hosted(name)))


def load_webdataset(path: str, split: str = "test", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    metadata: list[str] | None = None) -> ImageDataset:
    """The `split` of a CLIP_benchmark webdataset folder, with its own class names and templates; with `metadata`
    (field names), each sample's `.npy` holds those group fields (`ImageDataset.metadata`)."""
    root = Path(path).expanduser()
    count_file = root / split / "nshards.txt"
    if not count_file.is_file():
        raise UnavailableError(f"{root} is not a CLIP_benchmark webdataset: {split}/nshards.txt is missing")
    declared = _read_lines(root / "dataset_type.txt") if (root / "dataset_type.txt").is_file() else []
    kind = declared[0].lower() if declared else "classification"  # an empty file declares nothing
    if kind not in ("classification", "multilabel", "retrieval"):
        raise UsageError(f"{root} is a {kind} webdataset: pixprompt reads classification, multilabel and "
                         "retrieval ones")
    if kind == "retrieval":
        return _retrieval_webdataset(root, split, max_pixels)
    if not (root / "classnames.txt").is_file():
        raise UsageError(f"{root} has no classnames.txt: zero-shot classification needs the class names")
    images, labels, groups = index_shards(_shards(root, split), max_pixels, metadata_fields=metadata or ())
    if not labels:
        raise UnavailableError(f"webdataset {root} holds no image with a .cls or .npy label in {split}/")
    classnames = _read_lines(root / "classnames.txt")
    if len(classnames) < 2:
        raise UsageError(f"webdataset {root} has only {len(classnames)} class ({', '.join(classnames)}) in "
                         "classnames.txt: zero-shot evaluation needs at least two classes to choose between")
    multi_label = kind == "multilabel"
    if multi_label != all(isinstance(label, tuple) for label in labels):
        raise UsageError(f"webdataset {root}: a {kind} dataset needs "
                         f"{'a .npy' if multi_label else 'an integer .cls'} label for every sample")
    used = [c for label in labels for c in (label if multi_label else (label,))]
    if used and min(used) < 0:
        raise UsageError(f"webdataset {root}: a label is {min(used)}; labels are class numbers from 0 to "
                         f"{len(classnames) - 1}")
    if used and max(used) >= len(classnames):
        raise UsageError(f"webdataset {root}: labels run to {max(used)} but classnames.txt names "
                         f"{len(classnames)} classes (0 to {len(classnames) - 1})")
    templates = root / TEMPLATES_FILE
    return ImageDataset(f"wds:{root.name}", split, classnames, images, [-1] * len(labels) if multi_label else labels,
                        str(templates) if templates.is_file() else "standard",
                        label_sets=labels if multi_label else None,
                        metadata=(list(metadata), groups) if metadata else None)


def _shards(root: Path, split: str) -> list[Path]:
    shards = [root / split / f"{number}.tar" for number in range(_shard_count(root / split / "nshards.txt"))]
    missing = [str(shard) for shard in shards if not shard.is_file()]
    if missing:
        raise UnavailableError(f"webdataset {root}: shard(s) {', '.join(missing[:3])} missing")
    return shards


def _retrieval_webdataset(root: Path, split: str, max_pixels: int | None) -> ImageDataset:
    """A retrieval webdataset's `split`: every image with its captions (`.txt`)."""
    images, captions, _ = index_shards(_shards(root, split), max_pixels, retrieval=True)
    if not captions:
        raise UnavailableError(f"webdataset {root} holds no image with a .txt caption member in {split}/")
    return ImageDataset(f"wds:{root.name}", split, [], images, [-1] * len(captions), captions=captions)


def hosted_repository(name: str) -> str:
    """The Hub dataset repository of CLIP_benchmark's hosted copy: `vtab/cifar10` → clip-benchmark/wds_vtab-cifar10."""
    return f"clip-benchmark/wds_{name.replace('/', '-')}"


def fetch_hosted(name: str, split: str = "test") -> Path:
    """The local folder of `wds/NAME`: the Hugging Face cache's copy, downloaded (resumably) when missing."""
    return hub_snapshot(hosted_repository(name), [f"{split}/*", "*.txt"], f"wds/{name}",
                        f"--dataset wds:/path/to/wds_{name.replace('/', '-')}")


def hub_snapshot(repository: str, patterns: list[str], shown: str, local_hint: str) -> Path:
    """The Hugging Face cache's copy of dataset `repository` (the files matching `patterns`), downloaded
    (resumably) when missing; offline, a message naming `shown` and how to give a local copy (`local_hint`)."""
    from huggingface_hub import snapshot_download

    from pixprompt.models.offline import hub_reachable

    try:
        return Path(snapshot_download(repository, repo_type="dataset", allow_patterns=patterns,
                                      local_files_only=True))
    except Exception:  # not in the cache yet: download it
        pass
    if not hub_reachable():
        raise UnavailableError(
            f"dataset {shown} is not in the Hugging Face cache and the Hub cannot be reached (offline?)\n"
            f"  on a connected machine: hf download --repo-type dataset {repository}\n"
            f"  or give a local copy: {local_hint}")
    try:
        return Path(snapshot_download(repository, repo_type="dataset", allow_patterns=patterns))
    except Exception as error:  # unknown name, or the download broke off (run again: it resumes)
        raise UnavailableError(f"could not download {shown} from {repository} ({first_line(error, 200)}); "
                               "running again resumes the download") from None
