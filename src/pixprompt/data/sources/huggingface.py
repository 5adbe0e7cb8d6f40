"""Hugging Face `datasets` tables saved to disk or as parquet files (`hf:PATH`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from pixprompt.data.datasets import DatasetOptions, Game, ImageDataset
from pixprompt.data.registry import source
from pixprompt.errors import UnavailableError, UsageError, first_line


@dataclass
class HFImages:
    """A Hugging Face `datasets` table with an image column."""

    table: Any
    column: str

    def __len__(self) -> int:
        return len(self.table)

    def load(self, index: int) -> Image.Image:
        image = self.table[index][self.column]
        return (image if isinstance(image, Image.Image) else Image.open(image["path"])).convert("RGB")

    def item_id(self, index: int) -> str:
        return f"{self.table._fingerprint}|{index}"

    def describe(self, index: int) -> str:
        return f"row {index}"


#: Columns of a retrieval table holding each image's captions (a list, or one string): nlphuji's Flickr30k and
#: MSCOCO test sets, which DataComp reads, call it `caption`.
CAPTION_COLUMNS = ("caption", "captions", "sentences", "text")


def _captions(column: list, source: Path) -> list[tuple[str, ...]]:
    captions = [tuple(value) if isinstance(value, (list, tuple)) else (value,) for value in column]
    bad = next((row for row, texts in enumerate(captions)
                if not texts or not all(isinstance(t, str) and t.strip() for t in texts)), None)
    if bad is not None:
        raise UsageError(f"hf dataset {source}: row {bad} has no caption text ({str(column[bad])[:60]!r})")
    return [tuple(t.strip() for t in texts) for texts in captions]


def read_table(source: Path, split: str = "validation") -> Any:
    """The table of a Hugging Face `datasets` dataset saved with `save_to_disk`, or of parquet file(s); of a
    saved dataset dict, its `split` (else test, else the first)."""
    try:
        import datasets
    except ImportError:
        raise UnavailableError("hf: datasets need the `datasets` package: pip install datasets") from None
    if not source.exists():
        raise UnavailableError(f"hf dataset {source} does not exist")
    saved = source.is_dir() and any((source / name).exists() for name in ("dataset_info.json", "dataset_dict.json"))
    files = [] if saved else sorted(map(str, source.glob("*.parquet"))) if source.is_dir() else [str(source)]
    if not saved and not files:
        raise UnavailableError(f"hf dataset {source} holds neither a saved dataset (save_to_disk) nor .parquet files")
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(logging.CRITICAL)  # a failure is reported below, in one line
    try:
        table = datasets.load_from_disk(str(source)) if saved else \
            datasets.load_dataset("parquet", data_files=files, split="train")
    except Exception as error:  # datasets and pyarrow raise many kinds for empty or damaged files
        reason = first_line(error, 200)
        raise UnavailableError(f"hf dataset {source} could not be read ({type(error).__name__}: {reason})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    if isinstance(table, datasets.DatasetDict):
        table = table[split if split in table else "test" if "test" in table else next(iter(table))]
    return table


@dataclass
class HFListImages:
    """The images of a Hugging Face table's image-list column, one after another (row by row, then in the list)."""

    table: Any
    column: str
    positions: list[tuple[int, int]]
    #: The last row read (its number and images): a row's images are read in turn, and reading one decodes them all.
    _row: tuple[int, list] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.positions)

    def load(self, index: int) -> Image.Image:
        row, position = self.positions[index]
        if self._row is None or self._row[0] != row:
            self._row = (row, self.table[row][self.column])
        image = self._row[1][position]
        return (image if isinstance(image, Image.Image) else Image.open(image["path"])).convert("RGB")

    def item_id(self, index: int) -> str:
        row, position = self.positions[index]
        return f"{self.table._fingerprint}|{row}|{position}"

    def describe(self, index: int) -> str:
        row, position = self.positions[index]
        return f"row {row}, image {position}"


#: The columns of WinoGAViL's table, as DataComp's `wino_eval.py` reads them.
GAME_COLUMNS = ("candidate_images", "cue", "candidates", "associations")


def games_dataset(table: Any, source: str) -> ImageDataset:
    """An association-games dataset (WinoGAViL) from its table: each row a cue, its candidates' names and images,
    and the names of the candidates associated with the cue."""
    missing = [c for c in GAME_COLUMNS if c not in table.column_names]
    if missing:
        raise UsageError(f"{source}: an association table needs the columns {', '.join(GAME_COLUMNS)} "
                         f"(missing {', '.join(missing)})")
    games, positions = [], []
    for row, (cue, candidates, associations) in enumerate(zip(table["cue"], table["candidates"],
                                                             table["associations"])):
        if not (isinstance(cue, str) and cue.strip() and candidates and set(associations) <= set(candidates)):
            raise UsageError(f"{source}: row {row} is not a game (cue {str(cue)[:40]!r}, {len(candidates or [])} "
                             "candidates, associations among them)")
        if len(set(candidates)) != len(candidates):  # an association would mark every copy: Jaccard is undefined
            twice = next(c for c in candidates if candidates.count(c) > 1)
            raise UsageError(f"{source}: row {row} (cue {cue.strip()[:40]!r}) names candidate {str(twice)[:40]!r} "
                             "twice: each candidate of a game once")
        games.append(Game(cue.strip(), len(positions), tuple(c in set(associations) for c in candidates)))
        positions += [(row, position) for position in range(len(candidates))]
    return ImageDataset(source, "test", [], HFListImages(table, "candidate_images", positions), [-1] * len(positions),
                        games=games)


@source("hf", takes_path=True)
def load_hf(path: str, options: DatasetOptions) -> ImageDataset:
    """A Hugging Face `datasets` dataset saved with `save_to_disk`, or parquet file(s), with image+label (or
    image+captions: a retrieval dataset; or WinoGAViL's association games)."""
    source = Path(path).expanduser()
    table = read_table(source)
    if all(c in table.column_names for c in GAME_COLUMNS):
        return games_dataset(table, f"hf:{source.name}")
    image_column = next((c for c in ("image", "img") if c in table.column_names), None)
    label_column = next((c for c in ("label", "labels", "fine_label") if c in table.column_names), None)
    caption_column = next((c for c in CAPTION_COLUMNS if c in table.column_names), None)
    if image_column is not None and label_column is None and caption_column is not None:
        return ImageDataset(f"hf:{source.name}", "all", [], HFImages(table, image_column), [-1] * len(table),
                            captions=_captions(table[caption_column], source))
    if image_column is None or label_column is None:
        raise UsageError(f"hf dataset {source} needs an image and a label column, or an image and a caption "
                         f"column for retrieval (has {table.column_names})")
    feature = table.features[label_column]
    labels = list(table[label_column])
    if hasattr(feature, "names"):
        classnames = [n.replace("_", " ") for n in feature.names]
    else:
        classnames = sorted({str(v) for v in labels})
        index = {n: i for i, n in enumerate(classnames)}
        labels = [index[str(v)] for v in labels]
    return ImageDataset(f"hf:{source.name}", "all", classnames, HFImages(table, image_column), labels)


