"""DataComp's evaluation tasks (`datacomp/KEY`, KEY as in mlfoundations/datacomp's `tasklist.yml`), read from the
copies DataComp's own `evaluate.py` reads:

- classification tasks (with the WILDS and fairness ones): the webdatasets `djghosh/wds_{KEY, / as -}_test`, with
  their own class names and templates; the WILDS and fairness ones carry each sample's group metadata in `.npy`;
- retrieval tasks: the Hugging Face tables `nlphuji/NAME` (an image and its captions per row);
- WinoGAViL: the Hugging Face dataset `nlphuji/winogavil`'s test split (a cue, its candidates' names and images and
  the associated ones per row), loaded as DataComp's `wino_eval.py` loads it.

`--data-dir DIR` is DataComp's `--data_dir`: DIR/wds_…_test/ (or DIR itself when it is that webdataset, or the
table's folder for retrieval); without it, the copy is fetched into the Hugging Face cache on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pixprompt.data.catalog import CatalogEntry
from pixprompt.data.datasets import DatasetOptions, ImageDataset
from pixprompt.data.sources.huggingface import games_dataset, load_hf, read_table
from pixprompt.data.sources.webdataset import hub_snapshot, load_webdataset
from pixprompt.errors import UnavailableError, first_line


def load_datacomp(entry: CatalogEntry, options: DatasetOptions) -> ImageDataset:
    """The DataComp task `entry` (see the module's docstring), named by its catalog name."""
    read = entry.read
    key = read["datacomp"]
    if read.get("games"):
        dataset = games_dataset(_games_table(entry, options), entry.name)
    elif "hf" in read:
        dataset = load_hf(str(_retrieval_folder(entry, options)), options)
    else:
        dataset = load_webdataset(str(_webdataset_root(entry, options)), metadata=read.get("metadata"))
    dataset.name = entry.name
    dataset.split = f"{key} test"
    return dataset


def _games_table(entry: CatalogEntry, options: DatasetOptions):
    """WinoGAViL's test table: a saved copy under `--data-dir` (`load_dataset(…).save_to_disk(DIR)`, or parquet),
    else `datasets.load_dataset(REPO, split="test")`, the call DataComp's `wino_eval.py` makes (cached by
    `datasets`)."""
    repository = entry.read["hf"]
    if options.data_dir:
        return read_table(_local_copy(entry, Path(options.data_dir).expanduser()), split="test")
    if not options.download:
        raise UnavailableError(f"dataset {entry.name} is not on disk: pass {options.data_dir_option} (a copy of "
                               f"{repository} saved with save_to_disk), or {options.download_option}")
    from pixprompt.models.offline import hub_reachable

    try:
        import datasets

        if not hub_reachable():  # the one probe every Hub read goes by: only `datasets`' cache, no retries
            return _cached_table(datasets, repository, entry, options)
        return datasets.load_dataset(repository, split="test")
    except ImportError:
        raise UnavailableError("WinoGAViL needs the `datasets` package: pip install datasets") from None
    except Exception as error:  # no network, no such repository, a loader this `datasets` cannot run
        raise UnavailableError(f"dataset {entry.name}: {repository} could not be loaded ({type(error).__name__}: "
                               f"{first_line(error, 200)}); save a copy with datasets.load_dataset({repository!r}, "
                               f"split='test').save_to_disk(DIR) where it can be, and pass {options.data_dir_option} "
                               "DIR") from None


def _webdataset_root(entry: CatalogEntry, options: DatasetOptions) -> Path:
    return _copy(entry, options, entry.folder, f"djghosh/{entry.folder}", ["test/*", "*.txt"],
                 f"DataComp's --data_dir, holding {entry.folder}/")


def _retrieval_folder(entry: CatalogEntry, options: DatasetOptions) -> Path:
    """The folder of the table's parquet files (`data/`, as `hf download … --local-dir` leaves it)."""
    return _copy(entry, options, "data", entry.read["hf"], ["data/*"], f"a local copy of {entry.read['hf']}",
                 hosted_folder="data")


def _cached_table(datasets: Any, repository: str, entry: CatalogEntry, options: DatasetOptions):
    """The table from `datasets`' own cache, asking the Hub nothing; one line saying how to fetch it if absent."""
    config, setting = datasets.config, datasets.config.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = True
    try:
        return datasets.load_dataset(repository, split="test")
    except Exception:  # not cached: say how to have it
        raise UnavailableError(f"dataset {entry.name} is not on disk and the Hub cannot be reached (offline?): on a "
                               f"connected machine, save it with datasets.load_dataset({repository!r}, "
                               f"split='test').save_to_disk('DIR/winogavil') and give DIR as "
                               f"{options.data_dir_option}") from None
    finally:
        config.HF_HUB_OFFLINE = setting


def _local_copy(entry: CatalogEntry, root: Path, inner: str = "") -> Path:
    """The task's copy under a `--data-dir` or `data_root` folder: DataComp's `--data_dir` layout (the folder holds
    the task's own folder, `winogavil/` or `flickr_1k_test_image_text_retrieval/data/`) or the task's folder itself,
    whichever is there (the first folder of: root/TASK/inner, root/TASK, root/inner, root)."""
    candidates = [root / entry.folder / inner, root / entry.folder, root / inner, root] if inner and inner != \
        entry.folder else [root / entry.folder, root]
    return next((folder for folder in candidates if folder.is_dir()), root)


def _copy(entry: CatalogEntry, options: DatasetOptions, folder: str, repository: str, patterns: list[str],
          local: str, hosted_folder: str = "") -> Path:
    """The task's copy: under `--data-dir`, its `folder` there or the directory itself; else `repository`'s files
    matching `patterns` in the Hugging Face cache (downloaded when missing, if downloads are allowed), and the
    `hosted_folder` inside them. `local` says what `--data-dir` should hold."""
    if options.data_dir:
        return _local_copy(entry, Path(options.data_dir).expanduser(), folder)
    if not options.download:
        raise UnavailableError(f"dataset {entry.name} is not on disk: pass {options.data_dir_option} ({local}), or "
                               f"{options.download_option}")
    return hub_snapshot(repository, patterns, entry.name, f"{options.data_dir_option} DIR ({local})") / hosted_folder
