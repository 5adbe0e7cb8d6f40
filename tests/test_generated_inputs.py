"""Hostile inputs generated in CI (#34 part 5): for every reader and parser of user input — label files and lists,
template files, hierarchies, descriptor and description files, bench configs, results files, CSV tables, webdataset
members, cache chunks and environment variables — any generated input gives a valid result or one line with the
right exit code, and nothing is written. Hypothesis draws the inputs; each reader takes a few seconds."""
from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixprompt.errors import PixpromptError

FEW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
               database=None)

#: JSON values: scalars (texts with odd characters among them), lists and mappings, a few levels deep.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
#: A file's bytes: anything, UTF-8 text with odd characters, or a JSON/YAML document of generated values.
file_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    json_values.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: yaml.safe_dump(value).encode()),
)


def refuses_cleanly_or_reads(read: Callable[[], Any], folder: Path, codes: tuple[int, ...] = (2, 3)) -> Any:
    """`read()`'s value, or None after a `PixpromptError` of one line and one of `codes`; nothing new in `folder`."""
    before = sorted(folder.rglob("*"))
    try:
        value = read()
    except PixpromptError as error:
        message = str(error)
        assert message.strip() and "\n" not in message and len(message) < 800, message
        assert error.exit_code in codes, (error.exit_code, message)
        value = None
    assert sorted(folder.rglob("*")) == before, "a reader wrote something"
    return value


def with_file(data: bytes, name: str, read: Callable[[Path], Any], codes: tuple[int, ...] = (2, 3)) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return refuses_cleanly_or_reads(lambda: read(path), Path(folder), codes)


@FEW
@given(file_bytes)
def test_label_files(data):
    from pixprompt.prompts.labels import parse_labels

    labels = with_file(data, "labels.txt", lambda path: parse_labels(labels_file=str(path)))
    assert labels is None or (labels and all(name and name == name.strip() for name in labels))


@FEW
@given(st.text(max_size=80))
def test_label_lists(text):
    from pixprompt.prompts.labels import parse_labels

    with tempfile.TemporaryDirectory() as folder:
        refuses_cleanly_or_reads(lambda: parse_labels(text), Path(folder), (2,))


@FEW
@given(file_bytes, st.sampled_from(["mine.txt", "mine.json"]))
def test_template_files(data, name):
    from pixprompt.prompts.templates import resolve_templates

    sets = with_file(data, name, lambda path: resolve_templates(str(path)), (2,))
    assert sets is None or all(template.format("x") for template in sets[0].templates)


@FEW
@given(file_bytes)
def test_hierarchy_files(data):
    from pixprompt.evaluation.label_free import load_hierarchy

    hierarchy = with_file(data, "tree.json", load_hierarchy, (2,))
    assert hierarchy is None or all(subs and all(isinstance(s, str) and s for s in subs) for subs in
                                    hierarchy.values())


@FEW
@given(file_bytes, st.booleans())
def test_descriptor_and_description_files(data, dclip):
    from pixprompt.prompts.descriptors import load_dclip_descriptors
    from pixprompt.prompts.templates import load_descriptions

    prompt_set = with_file(data, "descriptors.json", load_dclip_descriptors if dclip else load_descriptions, (2,))
    assert prompt_set is None or all(isinstance(s, str) for sentences in prompt_set.descriptions.values()
                                     for s in sentences)


#: Bench configs: generated values under the schema's own keys (and some misspelt ones), or anything at all.
config_keys = st.sampled_from(["models", "datasets", "suite", "templates", "method", "download", "data_root",
                               "language", "template", "max_images", "ensemble"])
configs = st.one_of(st.dictionaries(config_keys, json_values | st.lists(json_values, max_size=3), max_size=5),
                    json_values)


@FEW
@given(configs)
def test_bench_configs(config):
    from pixprompt.evaluation.grid import load_grid

    grid = with_file(yaml.safe_dump(config).encode(), "grid.yaml", load_grid, (2, 3))
    assert grid is None or (grid.models and all(isinstance(m["model"], str) for m in grid.models))


@FEW
@given(file_bytes)
def test_bench_config_bytes(data):
    from pixprompt.evaluation.grid import load_grid

    with_file(data, "grid.yaml", load_grid, (2, 3))


#: Results files: lists of generated records around the fields pixprompt writes.
records = st.lists(st.fixed_dictionaries({"model": json_values, "top1": json_values},
                                         optional={"dataset": json_values, "templates": json_values,
                                                   "score": json_values, "images": json_values}), max_size=3)


@FEW
@given(st.one_of(records.map(lambda r: json.dumps(r).encode()), file_bytes))
def test_results_files(data):
    from pixprompt.reports.html import load_records

    with_file(data, "results.json", lambda path: load_records([path]), (2,))


@FEW
@given(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=5), st.booleans())
def test_csv_tables(rows, header):
    import csv

    from pixprompt.data.datasets import load_dataset

    text = io.StringIO()
    writer = csv.writer(text)
    if header:
        writer.writerow(["path", "label"])
    writer.writerows(rows)
    with_file(text.getvalue().encode("utf-8", "surrogatepass"), "table.csv",
              lambda path: load_dataset(f"csv:{path}"), (2, 3))


#: Tar members: a generated name (with and without a sample key's suffix) and generated bytes.
members = st.lists(st.tuples(st.sampled_from(["s1.webp", "s1.cls", "s2.cls", "s2.jpg", "s1.npy", "s3.txt", "a/b.cls",
                                              ".cls", "s1.webp"]) | st.text(min_size=1, max_size=12),
                             st.binary(max_size=64)), max_size=6)


@FEW
@given(members, st.sampled_from(["classification", "multilabel", "retrieval"]))
def test_webdataset_members(entries, kind):
    from pixprompt.data.sources.webdataset import load_webdataset

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "wds"
        (root / "test").mkdir(parents=True)
        (root / "test" / "nshards.txt").write_text("1\n")
        (root / "classnames.txt").write_text("cat\ndog\n")
        (root / "dataset_type.txt").write_text(kind)
        with tarfile.open(root / "test" / "0.tar", "w") as tar:
            for name, data in entries:
                member = tarfile.TarInfo(name.replace("\0", "_"))
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
        dataset = refuses_cleanly_or_reads(lambda: load_webdataset(str(root)), Path(folder), (2, 3))
        if dataset is not None:
            for index in range(len(dataset.images)):  # every listed item loads or fails as one image does
                try:
                    dataset.images.load(index)
                except Exception as error:  # noqa: BLE001 (an image's error row)
                    assert isinstance(error, (ValueError, OSError)), type(error)


@FEW
@given(st.binary(max_size=400))
def test_cache_chunks(data):
    """A chunk file of any bytes is removed with a warning and its images encoded again; the run never stops."""
    from pixprompt.features.cache import CHUNK_FORMAT, FeatureStore

    class Model:
        class info:  # noqa: N801 (what model_key reads)
            identity = "test:model"

        dtype, weights_stamp = "float32", ""

    with tempfile.TemporaryDirectory() as folder:
        store = FeatureStore(Path(folder), Model())
        store.folder.mkdir(parents=True)
        (store.folder / "chunk-0123456789abcdef0123.safetensors").write_bytes(data)
        index = store.index()
        assert len(index.keys) == 0 and store.folder.name == f"items@v{CHUNK_FORMAT}"


@FEW
@given(st.sampled_from(["PIXPROMPT_SHARD_SIZE", "PIXPROMPT_DIST_TIMEOUT", "PIXPROMPT_MAX_FILE_BYTES", "RANK",
                        "WORLD_SIZE", "SLURM_NTASKS"]), st.text(max_size=24))
def test_environment_variables(name, value):
    from pixprompt import distributed, readers

    if "\0" in value:
        return  # an environment cannot hold NUL
    environ = {name: value, **({"WORLD_SIZE": "2"} if name == "RANK" else {"RANK": "0"} if name == "WORLD_SIZE"
                               else {"SLURM_PROCID": "0"} if name == "SLURM_NTASKS" else {})}
    saved = {key: os.environ.get(key) for key in environ}
    try:
        os.environ.update(environ)
        with tempfile.TemporaryDirectory() as folder:
            for read in (distributed.shard_size, readers.max_file_bytes, lambda: distributed.discover(environ),
                         lambda: distributed.env_number("PIXPROMPT_DIST_TIMEOUT", 1800, 1, 7 * 24 * 3600,
                                                        integer=False)):
                refuses_cleanly_or_reads(read, Path(folder), (2,))
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@pytest.mark.parametrize("reader", ["labels", "templates", "hierarchy", "descriptors", "bench config", "results",
                                    "CSV tables", "webdataset members", "cache chunks", "environment variables"])
def test_every_reader_class_is_generated(reader):
    """README's table of hostile inputs names each class generated here."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Hostile input", 1)[1].split("\n## ", 1)[0]
    assert f"| {reader.lower()} |" in section.lower(), reader
