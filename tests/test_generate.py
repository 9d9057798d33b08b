"""The generator of made-up house sales (python -m pipeline.generate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import generate
from tests.helpers import assert_one_line_error, isolating_overrides, run_command


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run_command(generate.main, capsys, *argv)


def test_the_same_seed_writes_the_same_bytes_in_the_king_county_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "BLOCK_ROWS", 400)  # several blocks, the last one short
    paths = [tmp_path / name for name in ("a.csv", "b.csv", "c.csv")]
    for path, seed in zip(paths, ("1", "1", "2"), strict=True):
        status, out, err = run_main(capsys, "--rows", "1001", "--seed", seed, "--out", str(path))
        assert status == 0, err
        assert out.startswith(f"wrote 1,001 sales to {path}")
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    kc = (Path(__file__).parents[1] / "data" / "raw" / "kc_house_data.csv").open().readline()
    assert paths[0].open().readline() == kc  # the same header
    table = pd.read_csv(paths[0])
    assert len(table) == 1001 and not table.isna().any().any()
    assert (table["sqft_living"] > 0).all() and (table["price"] > 0).all()
    assert (table["sqft_above"] + table["sqft_basement"] == table["sqft_living"]).all()


def test_the_sales_have_the_skew_and_the_two_valleys_of_real_ones() -> None:
    rng = np.random.default_rng(0)
    sales = generate.sales_block(rng, 200_000)
    area, price = sales["sqft_living"].astype(float), sales["price"]
    assert np.median(area) == pytest.approx(1_900, rel=0.03)
    assert np.mean(area) > np.median(area)  # skewed right, as log-normal sizes are
    design = np.c_[np.ones_like(area), area]
    theta = np.linalg.lstsq(design, price, rcond=None)[0]  # least squares: one line through both markets
    assert theta[0] == pytest.approx(23_000, abs=10_000) and theta[1] == pytest.approx(258, abs=8)
    # Noise grows with the size: the spread around the line doubles from small to large houses.
    residual = price - design @ theta
    small, large = residual[area < 1_400].std(), residual[area > 3_000].std()
    assert large > 2 * small
    # The Welsch cost (c = $75,000) on a grid: two valleys, one per market, well below the plateau.
    x, y = area[:20_000], price[:20_000]
    theta0, theta1 = np.linspace(-500_000, 500_000, 121), np.linspace(0, 600, 121)
    cost = np.array(
        [np.mean(-np.expm1(-(((y - t0 - t1 * x) / 75_000.0) ** 2))) for t1 in theta1 for t0 in theta0]
    )
    grid = cost.reshape(121, 121)
    valleys = [
        (theta0[j], theta1[i])
        for i in range(1, 120)
        for j in range(1, 120)
        if grid[i, j] == grid[i - 1 : i + 2, j - 1 : j + 2].min() and grid[i, j] < 0.9
    ]
    slopes = sorted(slope for _, slope in valleys)
    assert (
        len(valleys) == 2
        and slopes[0] == pytest.approx(125, abs=20)
        and slopes[1] == pytest.approx(310, abs=25)
    )


def test_the_pipeline_ingests_the_generated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hydra import compose, initialize_config_dir

    from pipeline import ingest
    from pipeline.settings import CONF_DIR

    raw = tmp_path / "raw"
    raw.mkdir()
    status, _, err = run_main(capsys, "--rows", "5000", "--out", str(raw / "generated.csv"))
    assert status == 0, err
    overrides = [*isolating_overrides(tmp_path), f"paths.raw_dir={raw}", "data=generated"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=overrides)
    table = pd.read_parquet(ingest.run(cfg))
    assert list(table.columns) == ["sqft_living", "price"] and len(table) == 5000


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--rows", "0"], ["--rows: expected a whole number >= 1, got 0"]),
        (
            ["--rows", "10", "--out", "/nonexistent-folder/x.csv"],
            ["--out", "/nonexistent-folder", "does not exist"],
        ),
    ],
)
def test_bad_arguments_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    status, _, err = run_main(capsys, *argv)
    assert status == 2
    assert_one_line_error(err, *fragments)


def test_a_file_that_cannot_be_written_leaves_nothing_half_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "sales.csv"
    target.write_text("the previous file\n")
    calls = []

    def full_disk(block: dict[str, np.ndarray]) -> bytes:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return b"1,2\n"

    monkeypatch.setattr(generate, "BLOCK_ROWS", 10)
    monkeypatch.setattr(generate, "_csv_block", full_disk)
    status, _, err = run_main(capsys, "--rows", "50", "--out", str(target))
    assert status == 2
    assert_one_line_error(err, str(target), "No space left on device")
    assert target.read_text() == "the previous file\n"
    assert [path.name for path in tmp_path.iterdir()] == ["sales.csv"]  # no temporary file left
