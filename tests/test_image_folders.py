"""Photos as users have them: a folder of class subfolders (or a CSV of path,label) of PNG/JPEG files,
read with Pillow, resized, normalized per channel; unreadable files refused or skipped; predict on a folder."""

import subprocess
import tempfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines.config import DatasetParams
from pipelines.config.modalities import ImagePrepare
from pipelines.errors import PipelineInputError
from pipelines.modalities import preprocessor_from_state
from pipelines.modalities.common import shuffled_split
from pipelines.modalities.image import ImagePreprocessor
from pipelines.modalities.image_chunks import PhotoChunks, chunk_size
from pipelines.modalities.image_files import decode_all
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest
from pipelines.stages.prepare import load_split, prepare
from tests.conftest import BIN, copy_project, project_env, small_params

CLASSES = ("diagonal", "horizontal", "vertical")


def stripes(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """Stripes 2 pixels wide (random phase) under Gaussian noise: the class is visible, no two images alike."""
    i, j = np.indices((size, size))
    along = {"horizontal": i, "vertical": j, "diagonal": i + j}[kind] + rng.integers(0, 4)
    pixels = np.where(along % 4 < 2, 200.0, 50.0) + rng.normal(0, 25, (size, size))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_stripes(root, per_class: int = 40, seed: int = 0, color_every: int = 0, size: int = 16):
    """root/<class>/<n>.png; every `color_every`-th image saved as tinted RGB (0: all grayscale)."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for n in range(per_class):
            image = Image.fromarray(stripes(kind, rng, size))
            if color_every and n % color_every == 0:
                image = Image.merge("RGB", (image, image, image.point(lambda v: v // 2)))
            image.save(root / kind / f"{n:03d}.png")
    return root


def dataset(source, ingest_params: dict | None = None, **prepare_params) -> DatasetParams:
    return DatasetParams(
        modality="image",
        ingest={"source": str(source), **(ingest_params or {})},
        prepare=prepare_params,
        train={"candidates": {"c": {"family": "cnn"}}},
        register={"model_name": "m"},
    )


def test_a_folder_of_class_subfolders_is_read_resized_and_normalized(in_tmp):
    folder = write_stripes(in_tmp / "photos")
    (folder / "horizontal" / "notes.txt").write_text("not an image: ignored")
    (folder / "horizontal" / "more").mkdir()  # images deeper in a class folder belong to it
    (folder / "horizontal" / "039.png").rename(folder / "horizontal" / "more" / "039.png")
    params = dataset(folder, image_size=[12, 12])
    info = ingest("photos", params)
    assert info["kind"] == "image-folder" and info["images"] == 120 and info["skipped"] == 0
    assert info["class_counts"] == dict.fromkeys(CLASSES, 40) and info["image_shape"] == [1, 16, 16]
    assert len(list((DatasetPaths("photos").raw_dir / "files").iterdir())) == 120  # the originals, unchanged

    meta = prepare("photos", params)
    assert meta["classes"] == list(CLASSES)  # the folder names, sorted
    assert meta["input_shape"] == [1, 12, 12] and meta["task"] == "multiclass"
    state = meta["preprocessing"]
    assert state["image_size"] == [12, 12] and state["channels"] == 1
    train_x, train_y = load_split("photos", "train")
    assert train_x.shape[1:] == (1, 12, 12) and sorted(set(train_y.tolist())) == [0, 1, 2]
    assert abs(float(train_x.mean())) < 1e-4 and abs(float(train_x.std()) - 1) < 1e-3  # training statistics


def test_channels_are_inferred_or_set_and_sizes_must_agree_or_be_given(in_tmp):
    color = write_stripes(in_tmp / "color", per_class=6, color_every=3)
    info = ingest("color", dataset(color))
    assert info["image_shape"] == [3, 16, 16]  # one RGB image with different channels makes it color
    assert prepare("color", dataset(color))["input_shape"] == [3, 16, 16]
    assert prepare("color", dataset(color, channels=1))["input_shape"] == [1, 16, 16]

    mixed = write_stripes(in_tmp / "mixed", per_class=6)
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(mixed / "vertical" / "big.png")
    ingest("mixed", dataset(mixed))
    with pytest.raises(PipelineInputError, match=r"images differ in size .*set prepare.image_size"):
        prepare("mixed", dataset(mixed))
    assert prepare("mixed", dataset(mixed, image_size=10))["input_shape"] == [1, 10, 10]


def test_an_unreadable_file_is_refused_naming_it_or_skipped_and_counted(in_tmp):
    folder = write_stripes(in_tmp / "photos", per_class=10)
    (folder / "vertical" / "x.png").write_bytes(np.random.default_rng(3).bytes(300))
    with pytest.raises(PipelineInputError, match=r"photos/vertical/x.png: not a readable image") as err:
        ingest("photos", dataset(folder))
    assert "ingest.missing: drop" in str(err.value)
    assert not DatasetPaths("photos").raw_dir.exists()  # nothing half-written

    info = ingest("photos", dataset(folder, {"missing": "drop"}))
    assert info["images"] == 30 and info["skipped"] == 1
    assert info["skipped_files"][0]["file"] == "photos/vertical/x.png" and "x.png" in info["summary"]


def test_a_csv_of_paths_reads_the_same_images(in_tmp):
    folder = write_stripes(in_tmp / "photos", per_class=12)
    rows = [(f"photos/{kind}/{n:03d}.png", kind) for kind in CLASSES for n in range(12)]
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(in_tmp / "list.csv", index=False)
    ingest("folder", dataset(folder))
    info = ingest("listed", dataset(in_tmp / "list.csv"))
    assert info["kind"] == "image-csv" and info["images"] == 36
    folder_meta, csv_meta = prepare("folder", dataset(folder)), prepare("listed", dataset(in_tmp / "list.csv"))
    assert folder_meta["classes"] == csv_meta["classes"] == list(CLASSES)
    assert folder_meta["preprocessing"] == csv_meta["preprocessing"]
    for split in ("train", "val", "test"):
        for a, b in zip(load_split("folder", split), load_split("listed", split), strict=True):
            np.testing.assert_array_equal(a, b)

    pd.DataFrame([*rows, ("photos/gone.png", "vertical")], columns=["path", "label"]).to_csv("bad.csv", index=False)
    with pytest.raises(PipelineInputError, match=r"photos/gone.png: no such image file"):
        ingest("bad", dataset(in_tmp / "bad.csv"))
    pd.DataFrame([*rows, ("photos/vertical/000.png", "")], columns=["path", "label"]).to_csv("blank.csv", index=False)
    with pytest.raises(PipelineInputError, match=r"blank.csv: row 38: the label is empty"):
        ingest("blank", dataset(in_tmp / "blank.csv"))
    assert ingest("blank", dataset(in_tmp / "blank.csv", {"missing": "drop"}))["skipped"] == 1


def test_predict_inputs_go_through_the_same_preprocessing_as_prepare(in_tmp):
    folder = write_stripes(in_tmp / "photos", per_class=10, size=20)
    params = dataset(folder, image_size=[12, 12])
    ingest("photos", params)
    meta = prepare("photos", params)
    prep = preprocessor_from_state(meta["preprocessing"])
    x, frame = prep.read_inputs(str(folder))
    assert list(frame.columns) == ["file", "label"] and frame["label"].tolist() == [
        c for c in CLASSES for _ in range(10)
    ]
    test_idx = shuffled_split(len(x), ImagePrepare())["test"]
    np.testing.assert_array_equal(x[test_idx], load_split("photos", "test")[0])  # same pixels as prepare's

    one, frame = prep.read_inputs(str(folder / "vertical" / "003.png"))  # one file, no label
    assert one.shape == (1, 1, 12, 12) and list(frame.columns) == ["file"]
    np.testing.assert_array_equal(one[0], x[23])
    flat = folder / "vertical"  # a folder of images without class subfolders
    assert prep.read_inputs(str(flat))[0].shape == (10, 1, 12, 12)
    pd.DataFrame({"path": ["photos/vertical/003.png"]}).to_csv("paths.csv", index=False)  # paths, no labels
    listed, frame = prep.read_inputs(str(in_tmp / "paths.csv"))
    np.testing.assert_array_equal(listed[0], x[23])
    assert frame["file"].tolist() == ["photos/vertical/003.png"]
    with pytest.raises(PipelineInputError, match=r"gone.png: no such image file"):
        prep.read_inputs(str(folder / "gone.png"))
    (folder / "vertical" / "003.png").write_bytes(b"not a png")
    with pytest.raises(PipelineInputError, match=r"photos/vertical/003.png: not a readable image"):
        prep.read_inputs(str(folder))


def test_arrays_keep_their_size_unless_asked_and_then_match_at_predict(in_tmp):
    rng = np.random.default_rng(1)
    np.savez(in_tmp / "imgs.npz", x=rng.random((40, 7, 7)).astype(np.float32), y=np.array([0, 1] * 20))
    default = dataset(in_tmp / "imgs.npz")
    ingest("npz", default)
    state = prepare("npz", default)["preprocessing"]
    assert state["input_shape"] == [1, 7, 7] and sorted(state) == ["input_shape", "kind", "mean", "std"]  # as before
    asked = dataset(in_tmp / "imgs.npz", image_size=[4, 5], channels=3)
    meta = prepare("npz", asked)
    assert meta["input_shape"] == [3, 4, 5]
    x, _ = preprocessor_from_state(meta["preprocessing"]).read_inputs(str(in_tmp / "imgs.npz"))
    np.testing.assert_allclose(x[shuffled_split(40, ImagePrepare())["test"]], load_split("npz", "test")[0])


def test_photos_are_prepared_in_bounded_chunks_the_same_as_in_one(in_tmp):
    folder = write_stripes(in_tmp / "photos", per_class=10, color_every=4)  # RGB: three channels counted
    ingest("photos", dataset(folder))
    whole = prepare("photos", dataset(folder, chunk_images=10**6))
    arrays = {split: load_split("photos", split) for split in ("train", "val", "test")}
    assert prepare("photos", dataset(folder, chunk_images=7)) == whole  # 30 photos in chunks of 7: the same
    for split, (x, y) in arrays.items():
        chunked_x, chunked_y = load_split("photos", split)
        np.testing.assert_array_equal(chunked_x, x)
        np.testing.assert_array_equal(chunked_y, y)

    # The statistics are exact counts; the in-memory float32 fit they replace agrees within its rounding.
    raw = DatasetPaths("photos").raw_dir
    files = sorted((raw / "files").iterdir())
    pixels = decode_all(files, 3, (16, 16), [f.name for f in files]).astype(np.float32)
    in_memory = ImagePreprocessor([3, 16, 16]).fit(pixels[shuffled_split(len(files), ImagePrepare())["train"]])
    np.testing.assert_allclose(whole["preprocessing"]["mean"], in_memory.mean, rtol=1e-5)
    np.testing.assert_allclose(whole["preprocessing"]["std"], in_memory.std, rtol=1e-5)

    photos = PhotoChunks(raw, None, None, 7)
    with tempfile.TemporaryFile() as scratch:
        photos.decode_into(scratch, np.ones(photos.n, bool))
        sizes = [len(chunk) for _, chunk, _ in photos.decoded(scratch, np.zeros(photos.n, np.int8))]
    assert sizes == [7, 7, 7, 7, 2]  # never more than a chunk decoded at once
    assert chunk_size([1, 28, 28], None) == 16 * 2**20 // (4 * 784) and chunk_size([3, 4096, 4096], None) == 1

    files[5].write_bytes(b"not a png")  # damaged after ingest: prepare names it, and keeps the last prepare
    shown = pd.read_csv(raw / "images.csv")["path"][5]
    with pytest.raises(PipelineInputError, match=rf"{shown}: not a readable image"):
        prepare("photos", dataset(folder, chunk_images=7))
    np.testing.assert_array_equal(load_split("photos", "train")[0], arrays["train"][0])


@pytest.mark.slow
def test_a_photo_folder_trains_through_the_flow_and_predict_names_the_classes(tmp_path, prefect_api):
    """Through Prefect -> DVC -> Ray Train -> registry; then the predict CLI on the folder and on the test photos."""
    from pipelines.orchestration.flow import training_pipeline
    from pipelines.registry.local import LocalModelRegistry

    folder = write_stripes(tmp_path / "photos", per_class=40)
    params = small_params(("digits",), epochs=10, batch_size=16)
    stripes_ds = params["datasets"].pop("digits")
    stripes_ds["train"]["candidates"].pop("cnn-wide")  # one CNN is enough to carry the photos through
    stripes_ds["ingest"]["source"] = str(folder)
    stripes_ds["prepare"]["image_size"] = [12, 12]  # resized in prepare, and again by predict
    stripes_ds["register"]["model_name"] = "stripes-cnn"
    params["datasets"]["stripes"] = stripes_ds
    project = copy_project(tmp_path / "project", params)
    training_pipeline(workdir=str(project))

    registry = LocalModelRegistry(project / "data/registry")
    recorded = registry.get("stripes-cnn", 1).card["metrics"]["test/accuracy"]
    assert recorded > 0.6  # chance: 1/3

    def predict(*args: str) -> str:
        cmd = [str(BIN / "python"), "-m", "pipelines.predict", "stripes-cnn:1", *args, "--registry", "data/registry"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=project_env(), cwd=project)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    printed = predict(str(folder), str(tmp_path / "all.csv"))
    assert all(name in printed for name in CLASSES), printed
    out = pd.read_csv(tmp_path / "all.csv")
    assert set(out["prediction"]) <= set(CLASSES) and (out["prediction"] == out["label"]).mean() > 0.6

    index = pd.read_csv(project / DatasetPaths("stripes").raw_dir / "images.csv")
    test = index.iloc[shuffled_split(len(index), ImagePrepare())["test"]]
    pd.DataFrame({"path": [str(tmp_path / p) for p in test["path"]], "label": test["label"]}).to_csv(
        tmp_path / "test.csv", index=False
    )
    predict(str(tmp_path / "test.csv"), str(tmp_path / "test-out.csv"))
    out = pd.read_csv(tmp_path / "test-out.csv")
    assert (out["prediction"] == out["label"]).mean() == pytest.approx(recorded, abs=1e-6)  # the recorded metric
