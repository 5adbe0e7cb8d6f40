"""DataComp's evaluation tasks (`datacomp/KEY`, KEY as in mlfoundations/datacomp's `tasklist.yml`), read from the
copies DataComp's own `evaluate.py` reads:

- classification tasks (with the WILDS and fairness ones): the webdatasets `djghosh/wds_{KEY, / as -}_test`, with
  their own class names and templates; the WILDS and fairness ones carry each sample's group metadata in `.npy`;
- retrieval tasks: the Hugging Face tables `nlphuji/NAME` (an image and its captions per row).

`--data-dir DIR` is DataComp's `--data_dir`: DIR/wds_…_test/ (or DIR itself when it is that webdataset, or the
table's folder for retrieval); without it, the copy is fetched into the Hugging Face cache on first use.
"""
from __future__ import annotations

from pathlib import Path

from pixprompt.data.catalog import CatalogEntry
from pixprompt.data.datasets import DatasetOptions, ImageDataset
from pixprompt.data.sources.huggingface import load_hf
from pixprompt.data.sources.webdataset import hub_snapshot, load_webdataset
from pixprompt.errors import UnavailableError


def load_datacomp(entry: CatalogEntry, options: DatasetOptions) -> ImageDataset:
    """The DataComp task `entry` (see the module's docstring), named by its catalog name."""
    read = entry.read
    if "unscored" in read:
        raise UnavailableError(f"dataset {entry.name}: {read['unscored']}")
    key = read["datacomp"]
    if "hf" in read:
        dataset = load_hf(str(_retrieval_folder(entry, options)), options)
    else:
        dataset = load_webdataset(str(_webdataset_root(entry, options)), metadata=read.get("metadata"))
    dataset.name = entry.name
    dataset.split = f"{key} test"
    return dataset


def _webdataset_root(entry: CatalogEntry, options: DatasetOptions) -> Path:
    folder = entry.folder
    if options.data_dir:
        root = Path(options.data_dir).expanduser()
        return root / folder if (root / folder).is_dir() else root
    if not options.download:
        raise UnavailableError(f"dataset {entry.name} is not on disk: pass {options.data_dir_option} (DataComp's "
                               f"--data_dir, holding {folder}/), or {options.download_option}")
    return hub_snapshot(f"djghosh/{folder}", ["test/*", "*.txt"], entry.name,
                        f"{options.data_dir_option} DIR (holding DIR/{folder})")


def _retrieval_folder(entry: CatalogEntry, options: DatasetOptions) -> Path:
    """The folder of the table's parquet files: `--data-dir`'s `data/` (as `hf download … --local-dir` leaves it)
    or the folder itself, or the Hugging Face cache's copy."""
    repository = entry.read["hf"]
    if options.data_dir:
        root = Path(options.data_dir).expanduser()
        return root / "data" if (root / "data").is_dir() else root
    if not options.download:
        raise UnavailableError(f"dataset {entry.name} is not on disk: pass {options.data_dir_option} (a local copy "
                               f"of {repository}), or {options.download_option}")
    return hub_snapshot(repository, ["data/*"], entry.name, f"{options.data_dir_option} DIR") / "data"
