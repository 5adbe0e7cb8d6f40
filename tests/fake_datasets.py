"""Tiny fakes of each named dataset's published on-disk layout (as torchvision's own dataset tests build them).

Each builder writes a few real images into `root` in the layout the dataset's archive (or torchvision)
unpacks to, and returns the class name (in the CLIP paper's naming) of every image it wrote, so a test can
check that the reader found each image and mapped its label to the right class.
"""
from __future__ import annotations

import csv
import io
import json
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from pixprompt.prompts.templates import paper_classnames

FAKES: dict[str, Callable[[Path], list[str]]] = {}


def fake(name: str):
    def register(build: Callable[[Path], list[str]]):
        FAKES[name] = build
        return build
    return register


def image(path: Path, shade: int = 0, size: int = 12) -> Path:
    """A small real image file (format from the suffix), its colour varying with `shade`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((37 * shade) % 256, (91 * shade + 40) % 256, (53 * shade + 90) % 256)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def class_folders(root: Path, folders: dict[str, str], suffix: str = ".jpg", per_class: int = 2) -> list[str]:
    """`root/<folder>/<n>.<suffix>` for each folder → paper class name."""
    written = []
    for number, (folder, name) in enumerate(folders.items()):
        for copy in range(per_class):
            image(root / folder / f"{folder}_{copy}{suffix}", number * 3 + copy)
            written.append(name)
    return written


@fake("food101")
def food101(root: Path) -> list[str]:
    meta = {"apple_pie": ["apple_pie/101"], "baby_back_ribs": ["baby_back_ribs/7", "baby_back_ribs/8"],
            "waffles": ["waffles/3"]}
    for number, files in enumerate(sum(meta.values(), [])):
        image(root / "food-101" / "images" / f"{files}.jpg", number)
    (root / "food-101" / "meta").mkdir()
    (root / "food-101" / "meta" / "test.json").write_text(json.dumps(meta))
    return ["apple pie", "baby back ribs", "baby back ribs", "waffles"]


@fake("sun397")
def sun397(root: Path) -> list[str]:
    base = root / "SUN397"
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("/a/abbey\n/a/apartment_building/outdoor\n/y/youth_hostel\n")
    image(base / "a" / "abbey" / "sun_aaa.jpg", 1)
    image(base / "a" / "apartment_building" / "outdoor" / "sun_bbb.jpg", 2)
    image(base / "a" / "apartment_building" / "outdoor" / "sun_ccc.jpg", 3)
    image(base / "y" / "youth_hostel" / "sun_ddd.jpg", 4)
    return ["abbey", "apartment building outdoor", "apartment building outdoor", "youth hostel"]


def _savemat(path: Path, **arrays) -> None:
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), arrays)


@fake("stanford_cars")
def stanford_cars(root: Path) -> list[str]:
    base = root / "stanford_cars"
    names = paper_classnames("stanford_cars")
    _savemat(base / "devkit" / "cars_meta.mat", class_names=np.array(names, dtype=object))
    picked = [0, 5, 195]
    annotations = np.zeros(len(picked), dtype=[("fname", "O"), ("class", "O")])
    for row, label in enumerate(picked):
        annotations[row] = (f"{row:05d}.jpg", label + 1)  # the devkit counts classes from 1
        image(base / "cars_test" / f"{row:05d}.jpg", row)
    _savemat(base / "cars_test_annos_withlabels.mat", annotations=annotations)
    return [names[label] for label in picked]


@fake("fgvc_aircraft")
def fgvc_aircraft(root: Path) -> list[str]:
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    variants = paper_classnames("fgvc_aircraft")
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    rows = [("1025794", "707-320"), ("1340192", "F/A-18"), ("0056978", "Yak-42")]
    (data / "images_variant_test.txt").write_text("".join(f"{i} {v}\n" for i, v in rows))
    for number, (identifier, _) in enumerate(rows):
        image(data / "images" / f"{identifier}.jpg", number)
    return [variant for _, variant in rows]


@fake("dtd")
def dtd(root: Path) -> list[str]:
    base = root / "dtd" / "dtd"
    files = ["banded/banded_0002.jpg", "polka-dotted/polka-dotted_0101.jpg", "zigzagged/zigzagged_0007.jpg"]
    (base / "labels").mkdir(parents=True)
    (base / "labels" / "test1.txt").write_text("\n".join(files) + "\n")
    for number, file in enumerate(files):
        image(base / "images" / file, number)
    return ["banded", "polka-dotted", "zigzagged"]


@fake("oxford_pets")
def oxford_pets(root: Path) -> list[str]:
    base = root / "oxford-iiit-pet"
    names = paper_classnames("oxford_pets")
    # the dataset's list.txt numbers breeds by their file-name prefix in case-insensitive order, from 1
    raw = sorted((name.replace(" ", "_") if name[0].isupper() else name.replace(" ", "_").lower() for name in names),
                 key=str.lower)
    lines = []
    for number, breed in enumerate(raw, start=1):
        species = 1 if breed[0].isupper() else 2
        lines.append(f"{breed}_{number} {number} {species} 1")
        image(base / "images" / f"{breed}_{number}.jpg", number)
    (base / "annotations").mkdir(parents=True)
    (base / "annotations" / "test.txt").write_text("\n".join(lines) + "\n")
    by_lower = {name.lower().replace(" ", "_"): name for name in names}
    return [by_lower[breed.lower()] for breed in raw]


@fake("caltech101")
def caltech101(root: Path) -> list[str]:
    return class_folders(root / "caltech101" / "101_ObjectCategories",
                         {"BACKGROUND_Google": "background", "Faces": "off-center face", "Faces_easy": "centered face",
                          "crocodile_head": "head of a  crocodile", "water_lilly": "water lilly",
                          "yin_yang": "yin and yang symbol"})


@fake("flowers102")
def flowers102(root: Path) -> list[str]:
    base = root / "flowers-102"
    labels = np.arange(1, 103).repeat(2)  # image_00001 … image_00204, two per class, classes counted from 1
    for number in range(1, len(labels) + 1):
        image(base / "jpg" / f"image_{number:05d}.jpg", number)
    test = np.array([1, 2, 100, 204])
    _savemat(base / "imagelabels.mat", labels=labels)
    _savemat(base / "setid.mat", tstid=test, trnid=np.array([3]), valid=np.array([4]))
    names = paper_classnames("flowers102")
    return [names[labels[i - 1] - 1] for i in test]


def _idx(path: Path, array: np.ndarray) -> None:
    """An MNIST idx file: magic (0x08 = unsigned bytes, number of dimensions), the sizes, the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@fake("mnist")
def mnist(root: Path) -> list[str]:
    raw = root / "MNIST" / "raw"
    digits = np.array([7, 2, 1, 0, 9])
    pictures = np.stack([np.full((28, 28), 20 * d, dtype=np.uint8) for d in digits])
    for prefix in ("train", "t10k"):
        _idx(raw / f"{prefix}-images-idx3-ubyte", pictures)
        _idx(raw / f"{prefix}-labels-idx1-ubyte", digits)
    return [str(d) for d in digits]


@fake("fer2013")
def fer2013(root: Path) -> list[str]:
    folder = root / "fer2013"
    folder.mkdir(parents=True)
    rows = [(3, "PublicTest"), (0, "PrivateTest"), (6, "PublicTest"), (5, "Training")]
    with open(folder / "fer2013.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["emotion", "pixels", "Usage"])
        for number, (emotion, usage) in enumerate(rows):
            writer.writerow([emotion, " ".join(str((number * 40 + p) % 256) for p in range(48 * 48)), usage])
    names = paper_classnames("fer2013")
    return [names[emotion] for emotion, usage in rows if usage != "Training"]


@fake("stl10")
def stl10(root: Path) -> list[str]:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    names = paper_classnames("stl10")
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    labels = np.array([1, 10, 4], dtype=np.uint8)  # counted from 1
    pictures = np.stack([np.full((3, 96, 96), 30 * n, dtype=np.uint8) for n in range(len(labels))])
    pictures.tofile(folder / "test_X.bin")
    labels.tofile(folder / "test_y.bin")
    for name in ("train_X.bin", "train_y.bin", "unlabeled_X.bin"):
        (folder / name).write_bytes(b"")
    return [names[label - 1] for label in labels]


@fake("eurosat")
def eurosat(root: Path) -> list[str]:
    return class_folders(root / "eurosat" / "2750",
                         {"AnnualCrop": "annual crop land", "Forest": "forest", "SeaLake": "lake or sea"})


@fake("gtsrb")
def gtsrb(root: Path) -> list[str]:
    base = root / "gtsrb"
    rows = [("00000.ppm", 16), ("00001.ppm", 1), ("00002.ppm", 42)]
    for number, (file, _) in enumerate(rows):
        image(base / "GTSRB" / "Final_Test" / "Images" / file, number)
    lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    lines += [f"{file};12;12;1;1;11;11;{label}" for file, label in rows]
    (base / "GT-final_test.csv").write_text("\n".join(lines) + "\n")
    names = paper_classnames("gtsrb")
    return [names[label] for _, label in rows]


@fake("country211")
def country211(root: Path) -> list[str]:
    names = paper_classnames("country211")
    # the archive's folders are ISO 3166 codes, sorted as the paper's names are: AD (Andorra), AE, … ZW
    codes = [f"{chr(65 + n // 26)}{chr(65 + n % 26)}" for n in range(len(names))]
    test = root / "country211" / "test"
    for code in codes:
        (test / code).mkdir(parents=True)
    for number in (0, 1, 210):
        image(test / codes[number] / f"{number}.jpg", number)
    return [names[n] for n in (0, 1, 210)]


@fake("pcam")
def pcam(root: Path) -> list[str]:
    import h5py

    folder = root / "pcam"
    folder.mkdir(parents=True)
    labels = np.array([0, 1, 1], dtype=np.uint8)
    with h5py.File(folder / "camelyonpatch_level_2_split_test_x.h5", "w") as file:
        file["x"] = np.stack([np.full((96, 96, 3), 60 * n, dtype=np.uint8) for n in range(len(labels))])
    with h5py.File(folder / "camelyonpatch_level_2_split_test_y.h5", "w") as file:
        file["y"] = labels.reshape(-1, 1, 1, 1)
    names = paper_classnames("pcam")
    return [names[label] for label in labels]


@fake("rendered_sst2")
def rendered_sst2(root: Path) -> list[str]:
    return class_folders(root / "rendered-sst2" / "test", {"negative": "negative", "positive": "positive"}, ".png")


@fake("clevr_count")
def clevr_count(root: Path) -> list[str]:
    base = root / "clevr" / "CLEVR_v1.0"
    counts = {"CLEVR_val_000000.png": 3, "CLEVR_val_000001.png": 10, "CLEVR_val_000002.png": 7}
    for number, file in enumerate(counts):
        image(base / "images" / "val" / file, number)
    scenes = [{"image_filename": file, "objects": [{}] * count} for file, count in counts.items()]
    (base / "scenes").mkdir(parents=True)
    (base / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": scenes}))
    return [str(count) for count in counts.values()]


VOC_IMAGES = {"000001": ["dog", "person"], "000004": ["car", "car", "tvmonitor"], "000006": ["pottedplant"]}


@fake("voc2007")
def voc2007(root: Path) -> list[str]:
    base = root / "VOCdevkit" / "VOC2007"
    (base / "ImageSets" / "Main").mkdir(parents=True)
    (base / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in VOC_IMAGES))
    (base / "Annotations").mkdir()
    for number, (identifier, objects) in enumerate(VOC_IMAGES.items()):
        image(base / "JPEGImages" / f"{identifier}.jpg", number)
        box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        boxes = "".join(f"<object><name>{name}</name><difficult>{n % 2}</difficult>{box}</object>"
                        for n, name in enumerate(objects))
        (base / "Annotations" / f"{identifier}.xml").write_text(
            f"<annotation><filename>{identifier}.jpg</filename>{boxes}</annotation>")
    return sorted({name for objects in VOC_IMAGES.values() for name in objects})


@fake("resisc45")
def resisc45(root: Path) -> list[str]:
    return class_folders(root / "NWPU-RESISC45",
                         {"baseball_diamond": "baseball diamond", "sea_ice": "sea ice", "wetland": "wetland"})


@fake("birdsnap")
def birdsnap(root: Path) -> list[str]:
    return class_folders(root / "birdsnap" / "test",
                         {"Allen's_Hummingbird": "Allens Hummingbird",
                          "American_Three-toed_Woodpecker": "American Three toed Woodpecker"})


def webdataset(root: Path, classnames: list[str], labels: list[int] | list[tuple[int, ...]],
               templates: list[str] | None = None, metadata: list[tuple[int, ...]] | None = None) -> Path:
    """A CLIP_benchmark webdataset folder: test/0.tar with KEY.webp + KEY.cls samples (KEY.npy 0/1 vectors and
    dataset_type.txt `multilabel` when the labels are tuples; KEY.npy group metadata beside KEY.cls when
    `metadata` is given, as DataComp's WILDS and fairness copies hold it), classnames.txt."""
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1\n")
    (root / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates:
        (root / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    multi_label = isinstance(labels[0], tuple)
    if multi_label:
        (root / "dataset_type.txt").write_text("multilabel\n")
    with tarfile.open(root / "test" / "0.tar", "w") as tar:
        for number, label in enumerate(labels):
            picture = io.BytesIO()
            Image.new("RGB", (12, 12), (40 * number % 256, 90, 30)).save(picture, "WEBP")
            if multi_label:
                vector = io.BytesIO()
                np.save(vector, np.isin(np.arange(len(classnames)), label).astype(np.int64))
                label_member = ("npy", vector.getvalue())
            else:
                label_member = ("cls", str(label).encode())
            members = [("webp", picture.getvalue()), label_member]
            if metadata is not None:
                vector = io.BytesIO()
                np.save(vector, np.array(metadata[number], dtype=np.int64))
                members.append(("npy", vector.getvalue()))
            for suffix, data in members:
                member = tarfile.TarInfo(f"s{number:06d}.{suffix}")
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
    return root


@fake("kitti_distance")
def kitti_distance(root: Path) -> list[str]:
    names = paper_classnames("kitti_distance")  # CLIP_benchmark's names for this task are the paper's
    webdataset(root, names, [0, 3, 3])
    return [names[0], names[3], names[3]]


OBJECTNET_FOLDERS = {"air_freshener": ("Air freshener", None),
                     "alarm_clock": ("Alarm clock", "analog clock; digital clock"),
                     "backpack": ("Backpack", "backpack"), "banana": ("Banana", "banana"),
                     "bench": ("Bench", "park bench")}


def objectnet(root: Path) -> list[str]:
    """ObjectNet 1.0's images and mapping files (these beside `objectnet-1.0/`, where CLIP_benchmark reads them):
    air_freshener is not an ImageNet class, so its images are left out."""
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (folder, (label, imagenet)) in enumerate(OBJECTNET_FOLDERS.items()):
        for copy in range(2):
            image(root / "objectnet-1.0" / "images" / folder / f"{copy}.png", number * 2 + copy)
        written += [label.lower()] * 2 if imagenet else []
    (root / "folder_to_objectnet_label.json").write_text(
        json.dumps({folder: label for folder, (label, _) in OBJECTNET_FOLDERS.items()}))
    (root / "objectnet_to_imagenet_1k.json").write_text(
        json.dumps({label: imagenet for label, imagenet in OBJECTNET_FOLDERS.values() if imagenet}))
    imagenet_names = [n for _, imagenet in OBJECTNET_FOLDERS.values() if imagenet for n in imagenet.split("; ")]
    (root / "imagenet_to_label_2012_v2").write_text("\n".join(imagenet_names) + "\n")
    (root / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({str(i): i for i in range(len(imagenet_names))}))
    return written


#: WinoGAViL-like games: (cue, candidate count, associated candidates), sizes 5, 6, 10 and 12 as in the real set.
GAMES = [("sun", 5, (0, 3)), ("ice", 6, (1, 2, 5)), ("apple", 10, (4, 7)), ("night", 12, (0, 5, 9, 11)),
         ("umbrella", 10, (2, 3, 8)), ("wave", 5, (1, 4))]


def write_winogavil_table(folder: Path) -> int:
    """nlphuji/winogavil's test split as DataComp's wino_eval.py reads it (candidate_images, cue, candidates,
    associations), saved with save_to_disk; the number of candidate images."""
    import datasets
    from PIL import Image

    rows = {"candidate_images": [], "cue": [], "candidates": [], "associations": []}
    for number, (cue, count, associated) in enumerate(GAMES):
        names = [f"{cue}-{i}" for i in range(count)]
        rows["candidate_images"].append([Image.new("RGB", (20, 16), ((37 * i + 50 * number) % 256, 90 + 7 * i, 40))
                                         for i in range(count)])
        rows["cue"].append(cue)
        rows["candidates"].append(names)
        rows["associations"].append([names[i] for i in associated])
    features = datasets.Features({"candidate_images": datasets.Sequence(datasets.Image()), "cue": datasets.Value(
        "string"), "candidates": datasets.Sequence(datasets.Value("string")),
        "associations": datasets.Sequence(datasets.Value("string"))})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))
    return sum(count for _, count, _ in GAMES)
